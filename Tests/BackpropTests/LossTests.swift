import Backprop
import BackpropTestSupport
import Foundation
import Testing

@Suite struct LossTests {
    /// Central differences of a loss with respect to its prediction, in double.
    static func numericGradient(_ x: Tensor, epsilon: Float = 1e-2, _ loss: (Tensor) throws -> Float) throws -> [Double]
    {
        try (0..<x.count).map { i in
            var up = x, down = x
            up[i] += epsilon
            down[i] -= epsilon
            return (Double(try loss(up)) - Double(try loss(down))) / Double(up[i] - down[i])
        }
    }

    static func expectClose(_ analytic: Tensor, _ numeric: [Double], sourceLocation: SourceLocation = #_sourceLocation)
    {
        for (a, n) in zip(analytic.scalars, numeric) {
            #expect(
                abs(Double(a) - n) <= 2e-3 * max(abs(n), 1), "analytic \(a), numeric \(n)",
                sourceLocation: sourceLocation)
        }
    }

    @Test func softmaxCrossEntropyGradientMatchesFiniteDifferences() throws {
        let logits = randomTensor([4, 5], seed: 1, -3, 3), labels = [0, 4, 2, 2]
        let loss = try SoftmaxCrossEntropy()(logits, labels: labels)
        Self.expectClose(
            loss.gradient, try Self.numericGradient(logits) { try SoftmaxCrossEntropy()($0, labels: labels).value })
    }

    /// Two classes with logits (0, log 3): softmax = (1/4, 3/4); with label 0 the loss is log 4.
    @Test func softmaxCrossEntropyByHand() throws {
        let loss = try SoftmaxCrossEntropy()(Tensor(shape: [1, 2], scalars: [0, Float(log(3.0))]), labels: [0])
        #expect(abs(loss.value - Float(log(4.0))) < 1e-6)
        #expect(abs(loss.gradient[0] - (-0.75)) < 1e-6 && abs(loss.gradient[1] - 0.75) < 1e-6)
    }

    @Test func mseAndBCEGradientsMatchFiniteDifferences() throws {
        let target = randomTensor([3, 4], seed: 2, 0, 1)
        let x = randomTensor([3, 4], seed: 3, -2, 2)
        let probabilities = randomTensor([3, 4], seed: 4, 0.1, 0.9)
        let mse = MeanSquaredError(), bce = BinaryCrossEntropy(), logits = BinaryCrossEntropy(fromLogits: true)
        Self.expectClose(
            try mse(x, target: target).gradient, try Self.numericGradient(x) { try mse($0, target: target).value })
        Self.expectClose(
            try bce(probabilities, target: target).gradient,
            try Self.numericGradient(probabilities, epsilon: 1e-3) { try bce($0, target: target).value })
        Self.expectClose(
            try logits(x, target: target).gradient, try Self.numericGradient(x) { try logits($0, target: target).value }
        )
        // On logits, the loss equals BCE of their sigmoid.
        let sigmoid = try Sigmoid()(x)
        #expect(abs(try logits(x, target: target).value - (try bce(sigmoid, target: target).value)) < 1e-5)
    }

    /// Logits [N, T, C] are N · T rows: the same loss and gradient as the flattened [N · T, C].
    @Test func sequenceLogitsAreRows() throws {
        let logits = randomTensor([2, 3, 4], seed: 21, -3, 3), labels = [0, 3, 1, 2, 2, 0]
        let sequence = try SoftmaxCrossEntropy()(logits, labels: labels)
        let flat = try SoftmaxCrossEntropy()(logits.reshaped(to: [6, 4]), labels: labels)
        #expect(sequence.value == flat.value)
        #expect(sequence.gradient.shape == [2, 3, 4] && sequence.gradient.scalars == flat.gradient.scalars)
    }

    @Test func badLabelsAndShapesThrow() throws {
        let logits = try Tensor(shape: [2, 3])
        let loss = SoftmaxCrossEntropy()
        expectError(.invalidArgument, mentioning: ["label 3", "row 1", "[0, 3)"]) {
            _ = try loss(logits, labels: [0, 3])
        }
        expectError(.invalidArgument, mentioning: ["label -1"]) { _ = try loss(logits, labels: [-1, 0]) }
        expectError(.shapeMismatch, mentioning: ["1 labels", "[2, 3]", "expected 2"]) {
            _ = try loss(logits, labels: [0])
        }
        expectError(.invalidArgument, mentioning: ["label nan", "not a class index"]) {
            _ = try loss(logits, labels: Tensor([0, .nan]))
        }
        expectError(.invalidArgument, mentioning: ["label 0.5"]) { _ = try loss(logits, labels: Tensor([0, 0.5])) }
        expectError(.shapeMismatch, mentioning: ["[6]", "expected [*, C]"]) {
            _ = try loss(Tensor(shape: [6]), labels: [0])
        }
        expectError(.shapeMismatch, mentioning: ["MeanSquaredError", "[2, 3]", "[3, 2]"]) {
            _ = try MeanSquaredError()(logits, target: Tensor(shape: [3, 2]))
        }
        expectError(.invalidArgument, mentioning: ["BinaryCrossEntropy", "1.5", "probability"]) {
            _ = try BinaryCrossEntropy()(Tensor([0.5, 1.5]), target: Tensor([0, 1]))
        }
        expectError(.invalidArgument, mentioning: ["target nan"]) {
            _ = try MeanSquaredError()(Tensor([1]), target: Tensor([.nan]))
        }
    }
}
