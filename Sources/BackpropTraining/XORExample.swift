import Backprop

/// The smallest network that needs a hidden layer: a 2-4-1 multilayer perceptron
/// (Linear, Tanh, Linear, Sigmoid) trained with full-batch SGD on the four XOR points
/// under binary cross-entropy. The README's first command runs it.
public enum XORExample {
    public static let inputs: [[Float]] = [[0, 0], [0, 1], [1, 0], [1, 1]]
    public static let targets: [Float] = [0, 1, 1, 0]

    public struct Result: Sendable {
        public let loss: Float
        public let predictions: [Float]
        /// The fraction of the four points whose prediction lands on the right side of 0.5.
        public var accuracy: Double {
            Double(zip(predictions, targets).filter { ($0 > 0.5) == ($1 > 0.5) }.count) / Double(targets.count)
        }
    }

    /// Trains for `steps` full-batch steps, calling `progress(step, loss)` every 500 steps.
    public static func train(
        steps: Int = 2000, learningRate: Float = 0.5, seed: UInt64 = 1,
        progress: (Int, Float) -> Void = { _, _ in }
    ) throws -> Result {
        let model = Sequential(try Linear(2, 4, seed: seed), Tanh(), try Linear(4, 1, seed: seed &+ 1), Sigmoid())
        let optimizer = try SGD(parameters: model.parameters, learningRate: learningRate, momentum: 0.9)
        let x = try Tensor(shape: [4, 2], scalars: inputs.flatMap { $0 })
        let t = try Tensor(shape: [4, 1], scalars: targets)
        let loss = BinaryCrossEntropy()
        var lastLoss = Float.nan
        for step in 1...steps {
            optimizer.zeroGrad()
            let (y, backward) = try model.forward(x)
            let output = try loss(y, target: t)
            _ = try backward(output.gradient)
            optimizer.step()
            lastLoss = output.value
            if step % 500 == 0 { progress(step, lastLoss) }
        }
        return Result(loss: lastLoss, predictions: try model(x).scalars)
    }
}
