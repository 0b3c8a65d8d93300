import Backprop
import Foundation

/// A training run as one self-contained HTML page: inline SVG charts and tables, no scripts and
/// nothing fetched, so it opens from disk in any browser.
public enum TrainingReport {
    public static func html(_ history: TrainingHistory, title: String = "Backprop training report") -> String {
        let guides = history.epochs.map { (x: Double($0.step), label: "epoch \($0.epoch)") }
        func epochLine(_ name: String, _ value: (TrainingHistory.Epoch) -> Double?) -> SVGChart.Line {
            SVGChart.Line(
                name: name, points: history.epochs.compactMap { e in value(e).map { (Double(e.step), $0) } },
                markers: true)
        }
        func percent(_ series: [TrainingHistory.Series]) -> [SVGChart.Line] {
            series.map {
                SVGChart.Line(name: $0.name, points: $0.chartPoints.map { ($0.x, 100 * $0.y) }, markers: true)
            }
        }
        let hasValidation = history.epochs.contains { $0.validationLoss != nil }
        var charts = [
            SVGChart(
                title: "Loss", yLabel: "cross-entropy",
                lines: [
                    SVGChart.Line(
                        name: "batch loss (mean over buckets of steps)",
                        points: SVGChart.downsample(history.loss.chartPoints)),
                    epochLine("train loss (epoch mean)") { $0.trainLoss },
                    epochLine("test loss") { $0.testLoss },
                ]
                    + (hasValidation ? [epochLine("validation loss") { $0.validationLoss }] : []),
                guides: guides),
            SVGChart(
                title: "Accuracy", yLabel: "accuracy (%)",
                lines: [
                    epochLine("train accuracy") { 100 * $0.trainAccuracy },
                    epochLine("test accuracy") { 100 * $0.testAccuracy },
                ]
                    + (hasValidation
                        ? [epochLine("validation accuracy") { $0.validationAccuracy.map { 100 * $0 } }] : []),
                guides: guides),
            SVGChart(
                title: "Learning rate", yLabel: "learning rate",
                lines: [
                    SVGChart.Line(name: "learning rate", points: SVGChart.downsample(history.learningRate.chartPoints))
                ],
                guides: guides),
            .gradientNorms(history.gradientNorms, guides: guides),
        ]
        if !history.deadUnits.isEmpty {
            charts.append(
                SVGChart(
                    title: "Dead ReLU units (0 for every probe image)", yLabel: "dead units (%)",
                    lines: percent(history.deadUnits), guides: guides))
        }
        if !history.saturation.isEmpty {
            charts.append(
                SVGChart(
                    title: "Saturated sigmoid / tanh outputs (derivative < 10% of its maximum)",
                    yLabel: "saturated (%)",
                    lines: percent(history.saturation), guides: guides))
        }

        return page(
            title: title, settings: history.settings, tables: epochTable(history, validation: hasValidation),
            charts: charts,
            note: """
                Gradient norms are each layer's parameter gradient (weight and bias together) at every step;
                a norm falling by decades towards the first layers means vanishing gradients, a rising one exploding gradients.
                Dead units and saturation are measured on a fixed batch of training images in evaluation mode every few steps.
                Long curves are shown as means over equal buckets of steps.
                """)
    }

    /// A self-contained page: the title, a table of settings, `tables` (HTML), the charts and a note.
    static func page(title: String, settings: [[String]], tables: String, charts: [SVGChart], note: String) -> String {
        var page = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>\(escape(title))</title>
            <style>
            body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 760px; color: #222; }
            table { border-collapse: collapse; margin: 8px 0 20px; font-size: 13px; }
            td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
            td:first-child, th:first-child, table.settings td { text-align: left; }
            figure { margin: 18px 0; } p.note { font-size: 13px; color: #555; }
            </style></head><body>
            <h1>\(escape(title))</h1>

            """
        page +=
            "<table class=\"settings\">\n"
            + settings.map {
                "<tr><td>\(escape($0.first ?? ""))</td><td>\(escape($0.dropFirst().joined(separator: " ")))</td></tr>"
            }.joined(separator: "\n") + "\n</table>\n"
        page += tables
        for chart in charts { page += "<figure>\n" + chart.svg() + "</figure>\n" }
        return page + "<p class=\"note\">\(escape(note))</p>\n</body></html>\n"
    }

    private static func epochTable(_ history: TrainingHistory, validation: Bool) -> String {
        guard !history.epochs.isEmpty else { return "<p class=\"note\">No epoch finished.</p>\n" }
        var rows =
            "<table>\n<tr><th>epoch</th><th>train loss</th><th>train acc</th>"
            + (validation ? "<th>val loss</th><th>val acc</th>" : "")
            + "<th>test loss</th><th>test acc</th><th>learning rate</th><th>seconds</th>"
            + "<th>peak step memory</th><th>peak resident</th></tr>\n"
        for e in history.epochs {
            rows +=
                "<tr><td>\(e.epoch)</td>"
                + String(format: "<td>%.4f</td><td>%.2f%%</td>", e.trainLoss, 100 * e.trainAccuracy)
            if validation {
                rows += String(
                    format: "<td>%.4f</td><td>%.2f%%</td>", e.validationLoss ?? .nan,
                    100 * (e.validationAccuracy ?? .nan))
            }
            rows += String(
                format: "<td>%.4f</td><td>%.2f%%</td><td>%.3g</td><td>%.1f</td>", e.testLoss, 100 * e.testAccuracy,
                e.learningRate, e.seconds)
            rows += "<td>\(megabytes(e.peakStepBytes))</td><td>\(megabytes(e.peakResidentBytes))</td></tr>\n"
        }
        return rows + "</table>\n"
    }

    /// "12.3 MB", or "-" when not recorded.
    static func megabytes(_ bytes: Int?) -> String { bytes.map { String(format: "%.1f MB", Double($0) / 1e6) } ?? "-" }

    /// Writes the report atomically.
    public static func write(_ history: TrainingHistory, to url: URL, title: String = "Backprop training report") throws
    {
        try AtomicFile.write(Data(html(history, title: title).utf8), to: url)
    }
}
