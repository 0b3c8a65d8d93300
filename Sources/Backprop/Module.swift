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
        throw BackpropError(
            .shapeMismatch, "\(what): got shape \(describe(tensor.shape)), expected \(describe(current.shape))")
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

/// The backward function of a forward whose input needs no gradient (a network's data, as PyTorch's
/// inputs without requires_grad): given v = ∂J/∂u it adds ∂J/∂θ into every parameter's `grad`, and
/// computes no ∂J/∂z.
public typealias ParameterBackward = (_ gradOutput: Tensor) throws -> Void

/// A module's random generator (dropout's), shared by reference like a Parameter, so that a training
/// checkpoint can save where it stands and a resumed run draws the same numbers.
public final class RandomState {
    public var generator: SplitMix64

    public init(seed: UInt64) { generator = SplitMix64(seed: seed) }
}

/// A layer or network g: `forward(z)` returns u = g(z) and the backward function B[g, z].
///
/// Conventions: parameter gradients accumulate (+=) until `zeroGrad()`; nothing links a forward
/// to its backward but the returned closure, so two forwards may be followed by their two
/// backwards in any order. A container lists the modules it holds in `children`; names, modes
/// and tools that walk a network (checkpoints, the training monitor) derive from that.
public protocol Module: AnyObject, CustomStringConvertible {
    /// u = g(z) and B[g, z]. Throws when z does not fit the module.
    func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward)

    /// u = g(z) and a backward that adds the parameter gradients but computes no ∂J/∂z. Layers whose
    /// input gradient is costly (convolutions, linear) skip it; by default this is `forward(input)`.
    func forwardWithoutInputGradient(_ input: Tensor) throws -> (output: Tensor, backward: ParameterBackward)

    /// When this module can run together with `next` as one layer with the same bits (batch norm
    /// followed by ReLU; that pair followed by max pooling), that layer; nil by default. Containers
    /// ask it of each layer and its next neighbour, and again of the layer it returns.
    func fused(with next: Module) -> Module?

    /// The modules this one holds, by the names PyTorch gives them ("0", "1" in `nn.Sequential`).
    var children: [(name: String, module: Module)] { get }

    /// This module's own parameters (not its children's) by their PyTorch names ("weight", "bias").
    var ownParameters: [(name: String, parameter: Parameter)] { get }

    /// This module's own buffers ("running_mean", "running_var").
    var ownBuffers: [(name: String, buffer: Buffer)] { get }

    /// This module's own counters ("num_batches_tracked").
    var ownCounters: [(name: String, counter: Counter)] { get }

    /// This module's own random generators ("generator" for dropout).
    var ownRandomStates: [(name: String, state: RandomState)] { get }

    /// Training mode (dropout active, batch statistics); `false` is evaluation mode. A container
    /// passes a new value on to its children; `evaluating(_:)` switches a whole network for a while.
    var isTraining: Bool { get set }
}

extension Module {
    public func forwardWithoutInputGradient(_ input: Tensor) throws -> (output: Tensor, backward: ParameterBackward) {
        let (output, backward) = try forward(input)
        return (output, { _ = try backward($0) })
    }

    public func fused(with next: Module) -> Module? { nil }

    public var children: [(name: String, module: Module)] { [] }

    public var ownParameters: [(name: String, parameter: Parameter)] { [] }

    public var ownBuffers: [(name: String, buffer: Buffer)] { [] }

    public var ownCounters: [(name: String, counter: Counter)] { [] }

    public var ownRandomStates: [(name: String, state: RandomState)] { [] }

    /// This module and every module below it, depth first, each with its PyTorch name relative to
    /// this one ("" for this module, "1.0" for the first child of the second child).
    public var namedModules: [(name: String, module: Module)] {
        [("", self)]
            + children.flatMap { child in
                child.module.namedModules.map {
                    (name: $0.name.isEmpty ? child.name : "\(child.name).\($0.name)", module: $0.module)
                }
            }
    }

    /// Parameters of the whole network by their PyTorch names ("weight", "0.bias", "1.0.weight").
    public var namedParameters: [(name: String, parameter: Parameter)] { collect(\.ownParameters) }

    /// Buffers by their PyTorch names ("running_mean", "1.running_var").
    public var namedBuffers: [(name: String, buffer: Buffer)] { collect(\.ownBuffers) }

    /// Counters by their PyTorch names ("num_batches_tracked", "1.num_batches_tracked").
    public var namedCounters: [(name: String, counter: Counter)] { collect(\.ownCounters) }

    /// Random generators by name ("2.generator").
    public var namedRandomStates: [(name: String, state: RandomState)] { collect(\.ownRandomStates) }

    private func collect<T>(_ own: (Module) -> [(name: String, T)]) -> [(name: String, T)] {
        namedModules.flatMap { prefix, module in
            own(module).map { (name: prefix.isEmpty ? $0.name : "\(prefix).\($0.name)", $0.1) }
        }
    }

    public var parameters: [Parameter] { namedParameters.map(\.parameter) }

    /// Whether this module or one below it has parameters (without building their names).
    public var hasParameters: Bool { !ownParameters.isEmpty || children.contains { $0.module.hasParameters } }

    /// The output alone, for inference.
    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        try forward(input).output
    }

    /// Clears every parameter's accumulated gradient.
    public func zeroGrad() {
        for parameter in parameters { parameter.zeroGrad() }
    }

    /// Runs `body` with every module of the network in evaluation mode, then gives each module back
    /// the mode it had before (as PyTorch's `model.eval()` followed by restoring each `training`).
    public func evaluating<R>(_ body: () throws -> R) rethrows -> R {
        let modules = namedModules.map(\.module), modes = modules.map(\.isTraining)
        isTraining = false
        defer { for (module, mode) in zip(modules, modes) { module.isTraining = mode } }
        return try body()
    }
}

/// The parameters of a layer with an optional weight and bias, named as PyTorch names them.
func weightAndBias(_ weight: Parameter?, _ bias: Parameter?) -> [(name: String, parameter: Parameter)] {
    [weight.map { ("weight", $0) }, bias.map { ("bias", $0) }].compactMap { $0 }
}

extension Tensor {
    /// A tensor of `shape` whose every scalar `kernel` writes; the kernel returns the bytes of
    /// scratch memory it could not allocate (0: none), and then `module` throws. A shape past
    /// `Tensor.maxElements` is refused, naming `module`, before anything is allocated.
    static func computed(
        _ shape: [Int], by module: Module, _ kernel: (UnsafeMutablePointer<Float>) -> Int64
    ) throws
        -> Tensor
    {
        do { try validate(shape) } catch let error as BackpropError {
            throw BackpropError(error.kind, "\(module): \(error.message)")
        }
        var missing: Int64 = 0
        let tensor = Tensor.filled(shape) { missing = kernel($0) }
        try checkAllocation(missing, module)
        return tensor
    }
}

/// Throws when a kernel returned `missing` > 0: the bytes of scratch memory it could not allocate.
func checkAllocation(_ missing: Int64, _ module: Module) throws {
    guard missing == 0 else {
        throw BackpropError(.outOfMemory, "\(module): the kernel could not allocate \(missing) bytes of scratch memory")
    }
}

/// Checks that the gradient handed to a backward function has the forward output's shape.
func checkGradient(_ gradOutput: Tensor, matches shape: [Int], in module: Module) throws {
    guard gradOutput.shape == shape else {
        throw BackpropError(
            .shapeMismatch,
            "\(module) backward: gradient has shape \(describe(gradOutput.shape)), expected the output's \(describe(shape))"
        )
    }
}

/// A forward whose backward comes in two parts: the parameter gradients (which also checks the
/// gradient's shape) and the input gradient, which a forward without input gradient never runs.
struct SplitPass {
    let output: Tensor
    let parameterBackward: ParameterBackward
    let inputBackward: Backward

    /// The output and the whole backward: parameter gradients added, then ∂J/∂z returned.
    var full: (output: Tensor, backward: Backward) {
        let (parameterBackward, inputBackward) = (self.parameterBackward, self.inputBackward)
        return (
            output,
            { gradOutput in
                try parameterBackward(gradOutput)
                return try inputBackward(gradOutput)
            }
        )
    }

    var parametersOnly: (output: Tensor, backward: ParameterBackward) { (output, parameterBackward) }
}
