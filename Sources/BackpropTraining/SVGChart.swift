import Backprop
import Foundation

/// A line chart as inline SVG: no scripts, no external resources, so a report opens anywhere.
struct SVGChart {
    struct Line {
        let name: String
        let points: [(x: Double, y: Double)]
        /// Draws a dot at each point (for per-epoch values) as well as the line.
        var markers = false
    }

    let title: String
    let yLabel: String
    var lines: [Line]
    /// What the x axis counts.
    var xLabel = "training step"
    /// A logarithmic y axis (for gradient norms spanning decades).
    var logarithmic = false
    /// x positions of dashed vertical guides (epoch ends), with their labels.
    var guides: [(x: Double, label: String)] = []

    static let palette = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
    ]
    private let width = 720.0, height = 300.0
    private let left = 70.0, right = 20.0, top = 34.0, bottom = 44.0

    /// At most `limit` points: consecutive points averaged in equal buckets, so a curve over
    /// thousands of steps stays small and its noise is smoothed as a running mean would.
    static func downsample(_ points: [(x: Double, y: Double)], limit: Int = 300) -> [(x: Double, y: Double)] {
        guard points.count > limit else { return points }
        return (0..<limit).map { bucket in
            let range = (bucket * points.count / limit)..<((bucket + 1) * points.count / limit)
            let slice = points[range]
            return (
                slice.map(\.x).reduce(0, +) / Double(slice.count), slice.map(\.y).reduce(0, +) / Double(slice.count)
            )
        }
    }

    func svg() -> String {
        let plotted = lines.map { line in
            Line(
                name: line.name, points: line.points.filter { $0.y.isFinite && (!logarithmic || $0.y > 0) },
                markers: line.markers)
        }
        let xs = plotted.flatMap { $0.points.map(\.x) }, ys = plotted.flatMap { $0.points.map { transform($0.y) } }
        var svg =
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(width)) \(Int(height + legendHeight))\" "
            + "width=\"\(Int(width))\" height=\"\(Int(height + legendHeight))\" role=\"img\" aria-label=\"\(escape(title))\">\n"
        svg += "<text x=\"\(left)\" y=\"20\" font-size=\"15\" font-weight=\"bold\">\(escape(title))</text>\n"
        guard let xMin = xs.min(), let xMax = xs.max(), let yMinRaw = ys.min(), let yMaxRaw = ys.max() else {
            return svg + "<text x=\"\(left)\" y=\"\(height / 2)\" font-size=\"13\">no data</text>\n</svg>\n"
        }
        let (yMin, yMax) = yMinRaw == yMaxRaw ? (yMinRaw - 0.5, yMaxRaw + 0.5) : (yMinRaw, yMaxRaw)
        let xSpan = max(xMax - xMin, 1)
        func px(_ x: Double) -> Double { left + (x - xMin) / xSpan * (width - left - right) }
        func py(_ y: Double) -> Double {
            height - bottom - (transform(y) - yMin) / (yMax - yMin) * (height - top - bottom)
        }
        func fmt(_ v: Double) -> String { String(format: "%.1f", v) }

        svg +=
            "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(width - left - right)\" height=\"\(height - top - bottom)\" fill=\"none\" stroke=\"#999\"/>\n"
        for tick in yTicks(yMin, yMax) {
            let y = height - bottom - (tick.position - yMin) / (yMax - yMin) * (height - top - bottom)
            svg += "<line x1=\"\(left)\" x2=\"\(width - right)\" y1=\"\(fmt(y))\" y2=\"\(fmt(y))\" stroke=\"#eee\"/>"
            svg +=
                "<text x=\"\(left - 6)\" y=\"\(fmt(y + 4))\" font-size=\"11\" text-anchor=\"end\">\(tick.label)</text>\n"
        }
        for tick in Self.niceTicks(xMin, xMax) {
            svg +=
                "<text x=\"\(fmt(px(tick)))\" y=\"\(height - bottom + 16)\" font-size=\"11\" text-anchor=\"middle\">\(Self.label(tick))</text>\n"
        }
        for guide in guides where guide.x >= xMin && guide.x <= xMax {
            svg +=
                "<line x1=\"\(fmt(px(guide.x)))\" x2=\"\(fmt(px(guide.x)))\" y1=\"\(top)\" y2=\"\(height - bottom)\" stroke=\"#bbb\" stroke-dasharray=\"4 3\"/>"
            svg +=
                "<text x=\"\(fmt(px(guide.x) - 3))\" y=\"\(top + 12)\" font-size=\"10\" text-anchor=\"end\" fill=\"#888\">\(escape(guide.label))</text>\n"
        }
        svg +=
            "<text x=\"\((left + width - right) / 2)\" y=\"\(height - 8)\" font-size=\"12\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        svg +=
            "<text transform=\"translate(16 \((top + height - bottom) / 2)) rotate(-90)\" font-size=\"12\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"
        for (index, line) in plotted.enumerated() where !line.points.isEmpty {
            let color = Self.palette[index % Self.palette.count]
            let coordinates = line.points.map { "\(fmt(px($0.x))),\(fmt(py($0.y)))" }.joined(separator: " ")
            svg +=
                "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.6\" points=\"\(coordinates)\"><title>\(escape(line.name))</title></polyline>\n"
            if line.markers {
                for point in line.points {
                    svg +=
                        "<circle cx=\"\(fmt(px(point.x)))\" cy=\"\(fmt(py(point.y)))\" r=\"3\" fill=\"\(color)\"><title>\(escape(line.name)): \(Self.label(point.y))</title></circle>"
                }
                svg += "\n"
            }
        }
        for (index, line) in plotted.enumerated() {
            let (column, row) = (index % 2, index / 2)
            let (x, y) = (left + Double(column) * 330, height + 4 + Double(row) * 18)
            svg +=
                "<rect x=\"\(fmt(x))\" y=\"\(fmt(y))\" width=\"14\" height=\"4\" fill=\"\(Self.palette[index % Self.palette.count])\"/>"
            svg +=
                "<text x=\"\(fmt(x + 20))\" y=\"\(fmt(y + 6))\" font-size=\"11\">\(escape(String(line.name.prefix(52))))</text>\n"
        }
        return svg + "</svg>\n"
    }

    private var legendHeight: Double { Double((lines.count + 1) / 2) * 18 + 6 }

    private func transform(_ y: Double) -> Double { logarithmic ? log10(y) : y }

    /// Grid lines: powers of ten on a logarithmic axis, else 1-2-5 steps.
    private func yTicks(_ low: Double, _ high: Double) -> [(position: Double, label: String)] {
        guard logarithmic else { return Self.niceTicks(low, high).map { ($0, Self.label($0)) } }
        let decades = Int(floor(low))...Int(ceil(high))
        let step = max(1, decades.count / 6)
        return decades.filter { ($0 - decades.lowerBound) % step == 0 && Double($0) >= low && Double($0) <= high }
            .map { (Double($0), "1e\($0)") }
    }

    /// About five round values (1, 2 or 5 times a power of ten apart) between low and high.
    static func niceTicks(_ low: Double, _ high: Double) -> [Double] {
        guard high > low else { return [low] }
        let raw = (high - low) / 5, magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
        var ticks: [Double] = []
        var tick = ceil(low / step) * step
        while tick <= high + step * 1e-9 {
            ticks.append(tick)
            tick += step
        }
        return ticks
    }

    static func label(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e6 { return String(Int(value)) }
        return String(format: "%.3g", value)
    }
}

/// Text made safe for HTML and SVG.
func escape(_ text: String) -> String {
    text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
}

extension TrainingHistory.Series {
    /// The series as a chart's points: (step, value).
    var chartPoints: [(x: Double, y: Double)] { points.map { (Double($0.step), $0.value) } }
}

extension SVGChart {
    /// Each layer's parameter-gradient norm at every step, before clipping, on a logarithmic axis.
    static func gradientNorms(
        _ series: [TrainingHistory.Series], xLabel: String = "training step", guides: [(x: Double, label: String)] = []
    ) -> SVGChart {
        SVGChart(
            title: "Gradient norm per layer (before clipping)", yLabel: "‖∂J/∂θ‖ (log scale)",
            lines: series.map { SVGChart.Line(name: $0.name, points: downsample($0.chartPoints)) }, xLabel: xLabel,
            logarithmic: true, guides: guides)
    }
}
