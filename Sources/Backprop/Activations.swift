import CKernels

/// What the training monitor measures on an activation's output.
public enum ActivationHealth: Sendable {
    /// The fraction of units that output 0 for every example of a batch (ReLU).
    case deadUnits
    /// The fraction of outputs u where the derivative, scaled to a maximum of 1, is below 0.1
    /// (sigmoid: 4u(1 − u); tanh: 1 − u²).
    case saturation(derivative: @Sendable (Float) -> Float)
}

/// A module whose output can be inspected for dead or saturated units.
public protocol Activation: Module {
    var health: ActivationHealth? { get }
}

/// A module that applies a scalar function f to each element: u_i = f(z_i), and whose backward is
/// ∂J/∂z_i = v_i f'(z_i). The C kernels compute f'(z) from the saved input or, where cheaper,
/// from the saved output (sigmoid: u(1-u), tanh: 1-u²). Any shape.
public class Pointwise: Activation {
    typealias ForwardKernel = (_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int64) -> Void
    typealias BackwardKernel = (
        _ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>,
        _ saved: UnsafePointer<Float>, _ n: Int64
    ) -> Void
    /// What the backward reads: the input, only the input's sign (kept in bfloat16 in a bfloat16
    /// scope, see `SavedTensor`), or the output.
    enum Saved { case input, inputSign, output }

    public let description: String
    public let health: ActivationHealth?
    public var isTraining = true
    private let forwardKernel: ForwardKernel
    private let backwardKernel: BackwardKernel
    private let saved: Saved

    init(
        _ description: String, saved: Saved, health: ActivationHealth? = nil, forward: @escaping ForwardKernel,
        backward: @escaping BackwardKernel
    ) {
        self.description = description
        self.health = health
        self.saved = saved
        self.forwardKernel = forward
        self.backwardKernel = backward
    }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        let n = Int64(input.count), shape = input.shape
        let output = input.withPointer { x in Tensor.filled(shape) { forwardKernel($0, x, n) } }
        let savedTensor: SavedTensor
        switch saved {
        case .input: savedTensor = SavedTensor(input, rounding: false)
        case .inputSign: savedTensor = SavedTensor(input)
        case .output: savedTensor = SavedTensor(output, rounding: false)
        }
        return (
            output,
            { [backwardKernel] gradOutput in
                try checkGradient(gradOutput, matches: shape, in: self)
                return gradOutput.withPointer { dy in
                    savedTensor.tensor.withPointer { s in Tensor.filled(shape) { backwardKernel($0, dy, s, n) } }
                }
            }
        )
    }
}

/// u = max(z, 0); the gradient at 0 is 0, as PyTorch's.
public final class ReLU: Pointwise {
    public init() {
        super.init(
            "ReLU()", saved: .inputSign, health: .deadUnits, forward: bp_relu_forward, backward: bp_relu_backward)
    }
}

/// u = z for z > 0, slope · z otherwise (PyTorch's default slope 0.01).
public final class LeakyReLU: Pointwise {
    public let negativeSlope: Float

    public init(negativeSlope: Float = 0.01) {
        self.negativeSlope = negativeSlope
        super.init(
            "LeakyReLU(negativeSlope: \(negativeSlope))", saved: .inputSign,
            forward: { bp_leaky_relu_forward($0, $1, negativeSlope, $2) },
            backward: { bp_leaky_relu_backward($0, $1, $2, negativeSlope, $3) })
    }
}

/// u = 1 / (1 + e^(-z)); f' = u (1 - u).
public final class Sigmoid: Pointwise {
    public init() {
        super.init(
            "Sigmoid()", saved: .output, health: .saturation { 4 * $0 * (1 - $0) }, forward: bp_sigmoid_forward,
            backward: bp_sigmoid_backward)
    }
}

/// u = tanh z; f' = 1 - u².
public final class Tanh: Pointwise {
    public init() {
        super.init(
            "Tanh()", saved: .output, health: .saturation { 1 - $0 * $0 }, forward: bp_tanh_forward,
            backward: bp_tanh_backward)
    }
}

/// The exact GELU (PyTorch's default): u = z Φ(z), f' = Φ(z) + z φ(z).
public final class GELU: Pointwise {
    public init() { super.init("GELU()", saved: .input, forward: bp_gelu_forward, backward: bp_gelu_backward) }
}
