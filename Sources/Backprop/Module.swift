/// The backward function B[g, z] of a module g at input z: given v = ∂J/∂u for the output
/// u = g(z), it returns ∂J/∂z = (∂u/∂z)ᵀ v and adds ∂J/∂θ into every parameter's `grad`.
/// It captures z and whatever the forward saved, so each forward call has its own.
public typealias Backward = (_ gradOutput: Tensor) throws -> Tensor

/// A trainable tensor and the gradient accumulated into it.
/// A reference type: a module and its optimizer share it.
public final class Parameter {
    public var value: Tensor
    /// ∂J/∂value, summed over every backward call since the last `zeroGrad()`.
    public var grad: Tensor

    public init(_ value: Tensor) {
        self.value = value
        self.grad = Tensor(unchecked: value.shape, scalars: [Float](repeating: 0, count: value.count))
    }

    public func zeroGrad() {
        grad = Tensor(unchecked: value.shape, scalars: [Float](repeating: 0, count: value.count))
    }

    /// Replaces the value, keeping the shape; throws when `tensor` has another shape.
    public func load(_ tensor: Tensor, name: String) throws {
        value = try replacement(for: value, with: tensor, describing: "parameter \(name)")
    }
}

/// A tensor a module keeps between calls that is not trained by gradients (batch norm's running
/// statistics). A reference type, like Parameter, so checkpoints and fixtures can load it.
public final class Buffer {
    public var value: Tensor

    public init(_ value: Tensor) {
        self.value = value
    }

    /// Replaces the value, keeping the shape; throws when `tensor` has another shape.
    public func load(_ tensor: Tensor, name: String) throws {
        value = try replacement(for: value, with: tensor, describing: "buffer \(name)")
    }
}

/// `tensor`, when it has the shape of `current`, which it is to replace; `what` names it in the error.
private func replacement(for current: Tensor, with tensor: Tensor, describing what: String) throws -> Tensor {
    guard tensor.shape == current.shape else {
        throw BackpropError(.shapeMismatch, "\(what): got shape \(describe(tensor.shape)), expected \(describe(current.shape))")
    }
    return tensor
}

/// An integer a module keeps between calls (batch norm's `num_batches_tracked`); checkpoints
/// store it as int64, as PyTorch does.
public final class Counter {
    public var value: Int64

    public init(_ value: Int64 = 0) {
        self.value = value
    }
}

/// A layer or network g: `forward(z)` returns u = g(z) and the backward function B[g, z].
///
/// Conventions: parameter gradients accumulate (+=) until `zeroGrad()`; nothing links a forward
/// to its backward but the returned closure, so two forwards may be followed by their two
/// backwards in any order.
public protocol Module: AnyObject, CustomStringConvertible {
    /// u = g(z) and B[g, z]. Throws when z does not fit the module.
    func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward)

    /// The forward for an input that needs no gradient (a network's data, as PyTorch's inputs
    /// without requires_grad): with `inputGradient` false the backward adds the parameter gradients
    /// but may skip ∂J/∂z and return an empty tensor. Layers whose input gradient is costly
    /// (convolutions, linear) skip it; by default this is `forward(input)`.
    func forward(_ input: Tensor, inputGradient: Bool) throws -> (output: Tensor, backward: Backward)

    /// Parameters by their PyTorch names relative to this module ("weight", "0.bias", "1.0.weight").
    var namedParameters: [(name: String, parameter: Parameter)] { get }

    /// Buffers by their PyTorch names ("running_mean", "1.running_var").
    var namedBuffers: [(name: String, buffer: Buffer)] { get }

    /// Counters by their PyTorch names ("num_batches_tracked", "1.num_batches_tracked").
    var namedCounters: [(name: String, counter: Counter)] { get }

    /// Training mode (dropout active, batch statistics); `false` is evaluation mode.
    var isTraining: Bool { get set }
}

extension Module {
    public func forward(_ input: Tensor, inputGradient: Bool) throws -> (output: Tensor, backward: Backward) {
        try forward(input)
    }

    public var namedParameters: [(name: String, parameter: Parameter)] { [] }

    public var namedBuffers: [(name: String, buffer: Buffer)] { [] }

    public var namedCounters: [(name: String, counter: Counter)] { [] }

    public var parameters: [Parameter] { namedParameters.map(\.parameter) }

    /// The output alone, for inference.
    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        try forward(input).output
    }

    /// Clears every parameter's accumulated gradient.
    public func zeroGrad() {
        for parameter in parameters { parameter.zeroGrad() }
    }
}

/// The parameters of a layer with an optional weight and bias, named as PyTorch names them.
func weightAndBias(_ weight: Parameter?, _ bias: Parameter?) -> [(name: String, parameter: Parameter)] {
    [weight.map { ("weight", $0) }, bias.map { ("bias", $0) }].compactMap { $0 }
}

/// What a backward returns when the input gradient was not asked for.
let skippedGradient = Tensor(unchecked: [0], scalars: [])

/// Checks that the gradient handed to a backward function has the forward output's shape.
func checkGradient(_ gradOutput: Tensor, matches shape: [Int], in module: Module) throws {
    guard gradOutput.shape == shape else {
        throw BackpropError(.shapeMismatch,
                            "\(module) backward: gradient has shape \(describe(gradOutput.shape)), expected the output's \(describe(shape))")
    }
}
