import CKernels

/// A loss value and its gradient with respect to the prediction, the v that seeds the backward
/// pass: `try backward(loss.gradient)`. Every loss here takes the mean over all elements (or rows).
public struct LossOutput: Sendable {
    public let value: Float
    public let gradient: Tensor
}

/// Softmax cross-entropy on logits [N, C] with integer labels in [0, C), fused and stable for
/// large logits: L = (1/N) Σ_i (logsumexp(z_i) − z_i[y_i]); ∂L/∂z_i = (softmax(z_i) − onehot(y_i)) / N.
/// As PyTorch's `F.cross_entropy` with mean reduction. Logits [*, C] (a sequence's [N, T, C]) are
/// rows of C over all leading axes, with one label per row in row-major order.
///
/// With `divisor` D the sum is divided by D instead of N: a micro-batch's share of the mean over
/// the whole batch of D rows, so that the micro-batches' gradients add up to the batch's.
public struct SoftmaxCrossEntropy: Sendable {
    /// The count the summed loss is divided by; nil: the number of rows.
    public let divisor: Int?

    public init(divisor: Int? = nil) {
        self.divisor = divisor
    }

    public func callAsFunction(_ logits: Tensor, labels: [Int]) throws -> LossOutput {
        let (value, backward) = try forward(logits, labels: labels)
        return LossOutput(value: value, gradient: backward())
    }

    /// The two phases apart, as PyTorch runs them: the loss now, and a function that computes
    /// ∂L/∂logits when called, from the per-row max and softmax normaliser the forward saved.
    public func forward(_ logits: Tensor, labels: [Int]) throws -> (value: Float, backward: () -> Tensor) {
        guard logits.rank >= 2, logits.count > 0 else {
            throw BackpropError(
                .shapeMismatch,
                "SoftmaxCrossEntropy: logits have shape \(describe(logits.shape)), expected [*, C] with every size > 0")
        }
        let classes = logits.shape[logits.rank - 1], rows = logits.count / classes
        guard labels.count == rows else {
            throw BackpropError(
                .shapeMismatch,
                "SoftmaxCrossEntropy: \(labels.count) labels for logits \(describe(logits.shape)), expected \(rows)")
        }
        if let bad = labels.firstIndex(where: { !(0..<classes).contains($0) }) {
            throw BackpropError(
                .invalidArgument,
                "SoftmaxCrossEntropy: label \(labels[bad]) at row \(bad) is outside [0, \(classes))")
        }
        if let divisor, divisor < rows {
            throw BackpropError(
                .invalidArgument, "SoftmaxCrossEntropy: divisor \(divisor) is less than the \(rows) rows it averages")
        }
        let labels64 = labels.map(Int64.init), (n, c) = (Int64(rows), Int64(classes))
        let share = Double(rows) / Double(divisor ?? rows)
        var value = 0.0
        let stats = logits.withPointer { x in
            Tensor.filled([rows, 2]) { value = bp_softmax_xent_forward($0, x, labels64, n, c) }
        }
        return (
            Float(value * share),
            {
                logits.withPointer { x in
                    stats.withPointer { s in
                        Tensor.filled(logits.shape) {
                            bp_softmax_xent_backward($0, s, x, labels64, n, c, 1 / Float(divisor ?? rows))
                        }
                    }
                }
            }
        )
    }

    /// Labels given as a float tensor of shape [N] holding whole numbers.
    public func callAsFunction(_ logits: Tensor, labels: Tensor) throws -> LossOutput {
        guard labels.rank == 1 else {
            throw BackpropError(
                .shapeMismatch,
                "SoftmaxCrossEntropy: labels have shape \(describe(labels.shape)), expected [N]")
        }
        let integers = try labels.scalars.enumerated().map { index, label in
            guard label.isFinite, label == label.rounded(), abs(label) < 1e9 else {
                throw BackpropError(
                    .invalidArgument,
                    "SoftmaxCrossEntropy: label \(label) at row \(index) is not a class index")
            }
            return Int(label)
        }
        return try callAsFunction(logits, labels: integers)
    }
}

/// Mean squared error: L = (1/n) Σ (x − t)²; ∂L/∂x = 2 (x − t) / n.
public struct MeanSquaredError: Sendable {
    public init() {}

    public func callAsFunction(_ prediction: Tensor, target: Tensor) throws -> LossOutput {
        try pointwiseLoss("MeanSquaredError", prediction, target, kernel: bp_mse)
    }
}

/// Binary cross-entropy. On probabilities x ∈ [0, 1] (PyTorch's `BCELoss`, logs clamped at −100):
/// L = −(1/n) Σ (t log x + (1 − t) log(1 − x)). With `fromLogits` (PyTorch's `BCEWithLogitsLoss`),
/// stable for any x: L = (1/n) Σ (max(x, 0) − x t + log(1 + e^(−|x|))), ∂L/∂x = (σ(x) − t) / n.
public struct BinaryCrossEntropy: Sendable {
    public let fromLogits: Bool

    public init(fromLogits: Bool = false) {
        self.fromLogits = fromLogits
    }

    public func callAsFunction(_ prediction: Tensor, target: Tensor) throws -> LossOutput {
        let name = fromLogits ? "BinaryCrossEntropy(fromLogits)" : "BinaryCrossEntropy"
        if !fromLogits, let bad = prediction.scalars.firstIndex(where: { !($0 >= 0 && $0 <= 1) }) {
            throw BackpropError(
                .invalidArgument,
                "\(name): prediction \(prediction.scalars[bad]) at index \(bad) is not a probability in [0, 1]")
        }
        return try pointwiseLoss(name, prediction, target, kernel: fromLogits ? bp_bce_logits : bp_bce)
    }
}

/// Checks a prediction and target of equal, non-empty shape and runs a mean pointwise loss kernel.
private func pointwiseLoss(
    _ name: String, _ prediction: Tensor, _ target: Tensor,
    kernel: (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int64) -> Double
) throws -> LossOutput {
    guard prediction.shape == target.shape else {
        throw BackpropError(
            .shapeMismatch,
            "\(name): prediction has shape \(describe(prediction.shape)), target \(describe(target.shape)); expected equal shapes"
        )
    }
    guard prediction.count > 0 else {
        throw BackpropError(.invalidArgument, "\(name): prediction \(describe(prediction.shape)) is empty")
    }
    if let bad = target.scalars.firstIndex(where: { !$0.isFinite }) {
        throw BackpropError(.invalidArgument, "\(name): target \(target.scalars[bad]) at index \(bad) is not finite")
    }
    var value = 0.0
    let gradient = prediction.withPointer { x in
        target.withPointer { t in
            Tensor.filled(prediction.shape) { dx in value = kernel(dx, x, t, Int64(prediction.count)) }
        }
    }
    return LossOutput(value: Float(value), gradient: gradient)
}
