import Backprop
import BackpropTestSupport
import Foundation
import Testing

@testable import BackpropTraining

@Suite struct MonitorTests {
    @Test func deadAndSaturatedFractionsByHand() throws {
        // 3 examples of 4 units: unit 0 is 0 for every example, unit 2 only for two of them.
        let relu = try Tensor(
            shape: [3, 4],
            scalars: [
                0, 1, 0, 2,
                0, 0, 0, 1,
                0, 3, 5, 0,
            ])
        #expect(TrainingMonitor.deadFraction(relu) == 0.25)
        // Sigmoid outputs: 4u(1 − u) < 0.1 for u = 0.01 and 0.99 only.
        let sigmoid = Tensor([0.01, 0.5, 0.99, 0.3])
        #expect(TrainingMonitor.saturatedFraction(sigmoid) { 4 * $0 * (1 - $0) } == 0.5)
        let tanh = Tensor([0.99, -0.96, 0.5, 0.9])
        #expect(TrainingMonitor.saturatedFraction(tanh) { 1 - $0 * $0 } == 0.5)
    }

    @Test func recordsGradientNormsPerLayerAndProbesActivations() throws {
        let model = try ModelSpec.build("linear(4,3) relu residual(linear(3,3) tanh) linear(3,2) sigmoid", seed: 1)
        let monitor = TrainingMonitor(probeBatch: randomTensor([5, 4], seed: 1), probeInterval: 2)
        for step in 0..<4 {
            model.zeroGrad()
            let (y, backward) = try model.forward(randomTensor([5, 4], seed: UInt64(step)))
            _ = try backward(y)
            try monitor.afterBackward(model: model, loss: Double(step), learningRate: 0.5)
        }
        let history = monitor.history
        #expect(history.loss.points.map(\.value) == [0, 1, 2, 3])
        #expect(history.learningRate.points.allSatisfy { $0.value == 0.5 })
        #expect(
            history.gradientNorms.map(\.name) == [
                "0 Linear(in: 4, out: 3)", "2.0 Linear(in: 3, out: 3)", "3 Linear(in: 3, out: 2)",
            ])
        // The last layer's norm is ‖∂J/∂W‖ and ‖∂J/∂b‖ together, at the last step.
        let last = model.namedParameters.filter { $0.name.hasPrefix("3.") }
            .reduce(0.0) { $0 + $1.parameter.grad.scalars.reduce(0.0) { $0 + Double($1) * Double($1) } }.squareRoot()
        #expect(abs(history.gradientNorms[2].points.last!.value - last) <= 1e-12 * last)
        // Probes at steps 1, 2 and 4, for the ReLU, the tanh inside the residual block and the sigmoid.
        #expect(history.deadUnits.map(\.name) == ["1 ReLU()"])
        #expect(history.deadUnits[0].points.map(\.step) == [1, 2, 4])
        #expect(history.saturation.map(\.name) == ["2.1 Tanh()", "4 Sigmoid()"])
        #expect(model.isTraining, "the probe leaves the model in training mode")
    }

    @Test func reportHasEveryChartAndNoNonFiniteNumbers() throws {
        var history = TrainingHistory()
        history.settings = [["model", "linear(4,2) <&>"]]
        history.loss.points = (1...1000).map { .init(step: $0, value: 2 / Double($0)) }
        history.learningRate.points = (1...1000).map { .init(step: $0, value: 0.001) }
        history.gradientNorms = [
            .init(
                name: "0 Linear",
                points: [.init(step: 1, value: 1e-3), .init(step: 2, value: 0), .init(step: 3, value: 10)])
        ]
        history.deadUnits = [.init(name: "1 ReLU()", points: [.init(step: 1, value: 0.25)])]
        let train = Training.Metrics(loss: 0.5, accuracy: 0.8), test = Training.Metrics(loss: 0.6, accuracy: 0.75)
        history.epochs = [
            .init(epoch: 1, step: 1000, train: train, test: test, validation: nil, seconds: 3, learningRate: 0.001)
        ]
        let html = TrainingReport.html(history)
        for title in ["Loss", "Accuracy", "Learning rate", "Gradient norm per layer", "Dead ReLU units"] {
            #expect(html.contains("aria-label=\"\(title)"), "chart \(title)")
        }
        #expect(!html.contains("Saturated"), "no sigmoid or tanh, no saturation chart")
        #expect(html.contains("linear(4,2) &lt;&amp;&gt;"), "settings are escaped")
        #expect(
            !html.contains("nan") && !html.contains("inf"), "a zero norm on the log axis is left out, not drawn at -inf"
        )
        #expect(
            !html.contains("<script") && !html.contains("src=") && !html.contains("href="), "nothing to run or fetch")
        let loss = try #require(html.components(separatedBy: "<polyline").dropFirst().first)
        let points = loss.components(separatedBy: "points=\"")[1].prefix { $0 != "\"" }.split(separator: " ")
        #expect(points.count == 300, "1000 steps drawn as 300 bucket means")
    }

    @Test func niceTicksAreRoundNumbers() {
        #expect(zip(SVGChart.niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]).allSatisfy { abs($0 - $1) < 1e-12 })
        #expect(SVGChart.niceTicks(0, 1).count == 6)
        #expect(SVGChart.niceTicks(3, 47) == [10, 20, 30, 40])
        #expect(
            SVGChart.downsample((0..<10).map { (Double($0), Double($0)) }, limit: 5).map(\.y) == [
                0.5, 2.5, 4.5, 6.5, 8.5,
            ])
    }

    @Test func weightPenaltyGradientMatchesFiniteDifferences() throws {
        let weight = Parameter(randomTensor([3, 4], seed: 2)), bias = Parameter(randomTensor([3], seed: 3))
        let penalty = try WeightPenalty(l1: 0.25, l2: 0.5)
        let value = penalty.apply(to: [weight, bias])
        let w = weight.value.scalars.map(Double.init)
        #expect(abs(value - w.reduce(0) { $0 + 0.25 * abs($1) + 0.25 * $1 * $1 }) < 1e-9)
        for (index, x) in w.enumerated() {
            let h = 1e-4,
                slope = (0.25 * (abs(x + h) - abs(x - h)) + 0.25 * ((x + h) * (x + h) - (x - h) * (x - h))) / (2 * h)
            #expect(abs(Double(weight.grad[index]) - slope) < 1e-5)
        }
        #expect(bias.grad.scalars.allSatisfy { $0 == 0 }, "biases are not penalised")
        expectError(.invalidArgument, mentioning: ["WeightPenalty", "-1"]) { _ = try WeightPenalty(l1: -1) }
    }

    @Test func confusionMatrixCountsTrueByPredicted() {
        #expect(
            Training.confusionMatrix(labels: [0, 0, 1, 2, 2], predictions: [0, 1, 1, 2, 0], classes: 3)
                == [[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    }
}
