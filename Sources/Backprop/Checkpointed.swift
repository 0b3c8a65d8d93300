/// Gradient checkpointing (Chen et al. 2016): runs `module` forward keeping only its input, and in
/// the backward runs the forward again, then that forward's backward. Memory: the input instead of
/// everything the module's backward keeps; time: one more forward.
///
/// The recomputation is invisible in the results: it draws the same random numbers as the first
/// forward (every random state of the module is set back to where it stood then) and runs in the
/// modes it ran in; afterwards every random state, mode, buffer and counter is put back as it was
/// before the recomputation, so batch norm's running statistics are updated once. The loss, every
/// gradient and the running statistics are the bits of the plain module. The parameters must not
/// change between a forward and its backward.
///
/// Names: the wrapper adds no level, so parameters keep the names they have without it.
public final class Checkpointed: Module {
    public let module: Module

    public init(_ module: Module) {
        self.module = module
    }

    public var isTraining: Bool {
        get { module.isTraining }
        set { module.isTraining = newValue }
    }

    public var description: String { "Checkpointed(\(module))" }

    public var children: [(name: String, module: Module)] { module.children }
    public var ownParameters: [(name: String, parameter: Parameter)] { module.ownParameters }
    public var ownBuffers: [(name: String, buffer: Buffer)] { module.ownBuffers }
    public var ownCounters: [(name: String, counter: Counter)] { module.ownCounters }
    public var ownRandomStates: [(name: String, state: RandomState)] { module.ownRandomStates }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        let (output, recompute) = try run(input) { try $0.forward(input) }
        return (output, { gradOutput in try recompute()(gradOutput) })
    }

    public func forwardWithoutInputGradient(_ input: Tensor) throws -> (output: Tensor, backward: ParameterBackward) {
        let (output, recompute) = try run(input) { try $0.forwardWithoutInputGradient(input) }
        return (output, { gradOutput in try recompute()(gradOutput) })
    }

    /// The output of the module's forward on `input`, and a function that runs `pass` (a forward
    /// that keeps its backward) as that forward ran and returns its backward.
    private func run<B>(
        _ input: Tensor, _ pass: @escaping (Module) throws -> (output: Tensor, backward: B)
    ) throws -> (
        output: Tensor, recompute: () throws -> B
    ) {
        let first = ModuleState(module)
        let output = try module(input)
        return (
            output,
            { [module] in
                let current = ModuleState(module)
                defer { current.restore(module) }
                first.replay(module)
                let (again, backward) = try pass(module)
                guard again.shape == output.shape else {
                    throw BackpropError(
                        .shapeMismatch,
                        "\(self): the recomputed forward gave shape \(describe(again.shape)), the first \(describe(output.shape))"
                    )
                }
                return backward
            }
        )
    }
}

/// What a module keeps between calls, apart from its parameters: every random state, mode, buffer
/// and counter of it and its children.
struct ModuleState {
    let generators: [SplitMix64]
    let modes: [Bool]
    let buffers: [Tensor]
    let counters: [Int64]

    init(_ module: Module) {
        generators = module.namedRandomStates.map(\.state.generator)
        modes = module.namedModules.map(\.module.isTraining)
        buffers = module.namedBuffers.map(\.buffer.value)
        counters = module.namedCounters.map(\.counter.value)
    }

    /// Sets the random states and modes back to these, so that a forward draws and normalises as
    /// the one after this snapshot did.
    func replay(_ module: Module) {
        for (random, generator) in zip(module.namedRandomStates, generators) { random.state.generator = generator }
        for (entry, mode) in zip(module.namedModules, modes) { entry.module.isTraining = mode }
    }

    /// Puts everything back as it was at this snapshot.
    func restore(_ module: Module) {
        replay(module)
        for (entry, value) in zip(module.namedBuffers, buffers) { entry.buffer.value = value }
        for (entry, value) in zip(module.namedCounters, counters) { entry.counter.value = value }
    }
}
