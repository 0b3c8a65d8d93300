import CKernels
import Foundation

/// Gradient clipping, as `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.
public enum GradientClipping {
    /// Scales every gradient by maxNorm / (‖g‖ + 1e-6) when the global L2 norm ‖g‖ over all of them
    /// exceeds maxNorm. Returns ‖g‖ (summed in double in a fixed order).
    @discardableResult
    public static func clipByNorm(_ parameters: [Parameter], maxNorm: Float) throws -> Float {
        guard maxNorm > 0, maxNorm.isFinite else {
            throw BackpropError(.invalidArgument, "clipByNorm: maxNorm must be positive and finite, got \(maxNorm)")
        }
        let total = parameters.reduce(0.0) { sum, p in
            sum + p.grad.withPointer { bp_sum_squares($0, Int64(p.grad.count)) }
        }
        let norm = Float(total.squareRoot())
        let scale = maxNorm / (norm + 1e-6)
        if scale < 1 {
            for p in parameters {
                let n = Int64(p.grad.count)
                p.grad.withMutablePointer { bp_scale($0, scale, n) }
            }
        }
        return norm
    }

    /// Clamps every gradient element to [−clip, clip].
    public static func clipByValue(_ parameters: [Parameter], clip: Float) throws {
        guard clip > 0, clip.isFinite else {
            throw BackpropError(.invalidArgument, "clipByValue: clip must be positive and finite, got \(clip)")
        }
        for p in parameters {
            p.grad = Tensor(unchecked: p.grad.shape, scalars: p.grad.scalars.map { min(max($0, -clip), clip) })
        }
    }
}

/// A learning rate as a function of the epoch (or step) count, for `optimizer.learningRate`.
public protocol LearningRateSchedule: Sendable {
    /// The learning rate for epoch `epoch` (0-based).
    func learningRate(at epoch: Int) -> Float
}

/// η · γ^⌊epoch / stepSize⌋, as `torch.optim.lr_scheduler.StepLR`.
public struct StepSchedule: LearningRateSchedule {
    public let base: Float, stepSize: Int, gamma: Float

    public init(base: Float, stepSize: Int, gamma: Float = 0.1) throws {
        guard stepSize > 0 else { throw BackpropError(.invalidArgument, "StepSchedule: stepSize must be positive") }
        (self.base, self.stepSize, self.gamma) = (base, stepSize, gamma)
    }

    public func learningRate(at epoch: Int) -> Float { base * pow(gamma, Float(epoch / stepSize)) }
}

/// Cosine annealing from η to ηmin over `total` epochs, as `CosineAnnealingLR`, after `warmup` epochs
/// rising linearly from η / (warmup + 1): η(e) = ηmin + (η − ηmin)(1 + cos(π (e − warmup) / (total − warmup))) / 2.
public struct CosineSchedule: LearningRateSchedule {
    public let base: Float, minimum: Float, total: Int, warmup: Int

    public init(base: Float, total: Int, minimum: Float = 0, warmup: Int = 0) throws {
        guard total > warmup, warmup >= 0 else {
            throw BackpropError(
                .invalidArgument, "CosineSchedule: total (\(total)) must exceed warmup (\(warmup)) >= 0")
        }
        (self.base, self.minimum, self.total, self.warmup) = (base, minimum, total, warmup)
    }

    public func learningRate(at epoch: Int) -> Float {
        if epoch < warmup { return base * Float(epoch + 1) / Float(warmup + 1) }
        let progress = Double(min(epoch - warmup, total - warmup)) / Double(total - warmup)
        return minimum + (base - minimum) * Float((1 + cos(Double.pi * progress)) / 2)
    }
}

/// L1 and L2 penalties on the weights of linear and convolution layers (the parameters of rank 2
/// and more; biases and normalization scales are left alone, the usual choice):
/// J += l1 · Σ|w| + ½ · l2 · Σ w², so ∂J/∂w gains l1 · sign(w) + l2 · w. With SGD, l2 is the
/// same as weight decay l2; with Adam it is Adam's coupled weight decay, not AdamW's.
public struct WeightPenalty: Sendable {
    public let l1: Float, l2: Float

    public init(l1: Float = 0, l2: Float = 0) throws {
        guard l1 >= 0, l2 >= 0, l1.isFinite, l2.isFinite else {
            throw BackpropError(.invalidArgument, "WeightPenalty: l1 (\(l1)) and l2 (\(l2)) must be finite and >= 0")
        }
        (self.l1, self.l2) = (l1, l2)
    }

    /// Adds the penalty's gradient into each penalised parameter's `grad`; returns the penalty.
    @discardableResult
    public func apply(to parameters: [Parameter]) -> Double {
        parameters.filter { $0.value.rank >= 2 }.reduce(0.0) { sum, p in
            let n = Int64(p.value.count)
            return sum + p.value.withPointer { w in p.grad.withMutablePointer { g in bp_penalty(g, w, n, l1, l2) } }
        }
    }
}

/// What happens to the gradients between a step's backward and its optimizer update, in this
/// order: the weight penalty's gradient is added, then clipping by global norm, then by value.
public struct GradientAids: Sendable {
    public var penalty: WeightPenalty?
    public var clipNorm: Float?
    public var clipValue: Float?

    public init(penalty: WeightPenalty? = nil, clipNorm: Float? = nil, clipValue: Float? = nil) {
        (self.penalty, self.clipNorm, self.clipValue) = (penalty, clipNorm, clipValue)
    }

    /// Applies the aids to the parameters' gradients; returns the penalty added to the loss.
    @discardableResult
    package func apply(to parameters: [Parameter]) throws -> Double {
        let added = penalty?.apply(to: parameters) ?? 0
        if let clipNorm { try GradientClipping.clipByNorm(parameters, maxNorm: clipNorm) }
        if let clipValue { try GradientClipping.clipByValue(parameters, clip: clipValue) }
        return added
    }
}
