import Backprop
import Foundation

/// A language model's training run as one self-contained HTML page (see `TrainingReport`): the
/// loss per update and on the validation text, each layer's gradient norm, and how far back in an
/// update the gradient reaches at a few points of training.
public enum TextReport {
    public static func html(_ history: TextHistory, title: String = "Backprop language model report") -> String {
        let validation = history.validation.map { (x: Double($0.step), y: $0.value) }
        let charts = [
            SVGChart(
                title: "Loss", yLabel: "cross-entropy (nats per character)",
                lines: [
                    SVGChart.Line(
                        name: "training loss (mean over buckets of updates)",
                        points: SVGChart.downsample(history.training.loss.chartPoints)),
                    SVGChart.Line(name: "validation loss", points: validation, markers: true),
                ], xLabel: "update"),
            .gradientNorms(history.training.gradientNorms, xLabel: "update"),
            SVGChart(
                title: "How far back the gradient reaches within an update", yLabel: "‖∂J_T/∂x_t‖ (log scale)",
                lines: history.reach.map { reach in
                    SVGChart.Line(
                        name: "after update \(reach.step)",
                        points: reach.norms.enumerated().map { (Double($0.offset), $0.element) }, markers: true)
                }, xLabel: "time step t within the update (T is the last)",
                logarithmic: true),
        ]
        var table = "<table>\n<tr><th>update</th><th>validation loss (nats/char)</th><th>bits/char</th></tr>\n"
        for point in history.validation {
            table += String(
                format: "<tr><td>%d</td><td>%.4f</td><td>%.4f</td></tr>\n", point.step, point.value,
                point.value / log(2.0))
        }
        return TrainingReport.page(
            title: title, settings: history.training.settings, tables: table + "</table>\n", charts: charts,
            note: """
                The last chart is backpropagation through time made visible: the gradient of the loss at an update's \
                last step T with respect to the recurrent layers' input at each step t, from zero state. Where it falls \
                by decades towards t = 0 the gradient vanishes: what lies that far back cannot be learnt from this \
                loss, however long the sequence. Gradient norms are each layer's parameter gradient at every update; \
                long curves are shown as means over equal buckets of updates.
                """)
    }

    /// Writes the report atomically.
    public static func write(_ history: TextHistory, to url: URL) throws {
        try AtomicFile.write(Data(html(history).utf8), to: url)
    }
}
