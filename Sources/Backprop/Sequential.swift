/// Composition g = g_n ∘ … ∘ g_1: the output of each layer is the input of the next.
/// Its backward applies the layers' backward functions in reverse order:
/// B[g, z](v) = B[g_1, z](B[g_2, g_1(z)](… B[g_n, ·](v))).
/// Parameters are named as PyTorch's `nn.Sequential` names them: "<index>.<name>".
/// Neighbours that can run as one layer (`Module.fused(with:)`: a BatchNorm followed by a ReLU, and
/// that followed by a MaxPool2D) do, with the same bits, except while a `ForwardObserver` watches.
/// With `checkpoint(segments:)` the layers run as that many `Checkpointed` segments (gradient
/// checkpointing, the same bits).
public final class Sequential: Module {
    public private(set) var layers: [Module]
    /// The number of checkpointed segments the layers run as; nil: none (every layer keeps what its
    /// backward needs).
    public private(set) var checkpointSegments: Int?

    public init(_ layers: [Module]) {
        self.layers = layers
    }

    public convenience init(_ layers: Module...) {
        self.init(layers)
    }

    public var isTraining: Bool = true {
        didSet { for layer in layers { layer.isTraining = isTraining } }
    }

    public var description: String {
        "Sequential(" + layers.map(\.description).joined(separator: ", ") + ")"
    }

    public var children: [(name: String, module: Module)] {
        layers.enumerated().map { (name: "\($0.offset)", module: $0.element) }
    }

    /// Runs the layers as `segments` consecutive groups of nearly equal size, each a `Checkpointed`
    /// segment that keeps only its input for the backward and runs its forward again there: memory
    /// O(segments + layers / segments) instead of O(layers), one more forward's time. √(layer count)
    /// segments (the default, `Sequential.defaultSegments`) keep the fewest inputs. nil turns it off.
    /// Throws unless 1 ≤ segments ≤ the layer count.
    public func checkpoint(segments: Int?) throws {
        if let segments, !(1...max(layers.count, 1)).contains(segments) {
            throw BackpropError(
                .invalidArgument,
                "Sequential: \(segments) checkpoint segments for \(layers.count) layers, expected 1 to \(layers.count)")
        }
        checkpointSegments = segments
    }

    /// About √(layer count), at least 1.
    public var defaultSegments: Int { max(1, Int(Double(layers.count).squareRoot().rounded())) }

    /// What the forward runs one after the other: the layers, or their checkpointed segments.
    private var units: [Module] {
        guard let segments = checkpointSegments else { return layers }
        return (0..<segments).map { g in
            Checkpointed(Sequential(Array(layers[g * layers.count / segments..<(g + 1) * layers.count / segments])))
        }
    }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        let (output, backwards, _) = try run(input, units, first: 0, parametersOnly: false)
        return (output, { gradOutput in try backwards.reversed().reduce(gradOutput) { try $1($0) } })
    }

    /// The layers before the first one with parameters need no backward at all, and that one needs
    /// no input gradient.
    public func forwardWithoutInputGradient(_ input: Tensor) throws -> (output: Tensor, backward: ParameterBackward) {
        let units = self.units
        let first = units.firstIndex(where: \.hasParameters) ?? units.count
        let (output, backwards, parameterBackward) = try run(input, units, first: first, parametersOnly: true)
        return (
            output,
            { gradOutput in
                let grad = try backwards.reversed().reduce(gradOutput) { try $1($0) }
                try parameterBackward?(grad)
            }
        )
    }

    /// Runs the units (layers or segments) on `input`. Units before `first` keep no backward; with
    /// `parametersOnly`, unit `first` runs without its input gradient and its backward is returned apart.
    private func run(
        _ input: Tensor, _ layers: [Module], first: Int, parametersOnly: Bool
    )
        throws -> (output: Tensor, backwards: [Backward], parameterBackward: ParameterBackward?)
    {
        let observer = ForwardObserver.current
        var output = input, backwards: [Backward] = [], parameterBackward: ParameterBackward? = nil
        backwards.reserveCapacity(layers.count)
        var index = 0
        while index < layers.count {
            var layer = layers[index], width = 1
            while observer == nil, index + width < layers.count, index + width != first,
                let fused = layer.fused(with: layers[index + width])
            {
                (layer, width) = (fused, width + 1)
            }
            if index < first {
                output = try layer(output)
            } else if index == first && parametersOnly {
                (output, parameterBackward) = try layer.forwardWithoutInputGradient(output)
            } else {
                let step = try layer.forward(output)
                output = step.output
                backwards.append(step.backward)
            }
            observer?.record(layer, output)
            index += width
        }
        return (output, backwards, parameterBackward)
    }
}

/// Watches forward passes, as PyTorch's forward hooks do for tools: while a task runs inside
/// `ForwardObserver.$current.withValue(observer) { ... }`, every container reports each child it
/// runs with that child's output (and runs no fused layers, so each child is seen).
public final class ForwardObserver: @unchecked Sendable {
    /// The observer of the running task, if any.
    @TaskLocal public static var current: ForwardObserver?

    let record: (Module, Tensor) -> Void

    public init(_ record: @escaping (_ module: Module, _ output: Tensor) -> Void) {
        self.record = record
    }
}

/// u = body(z) + z: a residual block. Its backward is B[body, z](v) + v.
/// The body's layers are named directly under the block ("1.0.weight"), as the model spec's
/// `residual(...)`, an `nn.Sequential` subclass, names them.
public final class Residual: Module {
    public let body: Sequential

    public init(_ layers: [Module]) {
        body = Sequential(layers)
    }

    public convenience init(_ layers: Module...) {
        self.init(layers)
    }

    public var isTraining: Bool {
        get { body.isTraining }
        set { body.isTraining = newValue }
    }

    public var description: String {
        "Residual(" + body.layers.map(\.description).joined(separator: ", ") + ")"
    }

    public var children: [(name: String, module: Module)] { body.children }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        let (bodyOutput, bodyBackward) = try body.forward(input)
        let output = try sum(bodyOutput, input)
        return (
            output,
            { gradOutput in
                try checkGradient(gradOutput, matches: output.shape, in: self)
                return try bodyBackward(gradOutput).adding(gradOutput)
            }
        )
    }

    public func forwardWithoutInputGradient(_ input: Tensor) throws -> (output: Tensor, backward: ParameterBackward) {
        let (bodyOutput, bodyBackward) = try body.forwardWithoutInputGradient(input)
        let output = try sum(bodyOutput, input)
        return (
            output,
            { gradOutput in
                try checkGradient(gradOutput, matches: output.shape, in: self)
                try bodyBackward(gradOutput)
            }
        )
    }

    private func sum(_ bodyOutput: Tensor, _ input: Tensor) throws -> Tensor {
        guard bodyOutput.shape == input.shape else {
            throw BackpropError(
                .shapeMismatch,
                "\(self): body output has shape \(describe(bodyOutput.shape)), expected the input's \(describe(input.shape))"
            )
        }
        return bodyOutput.adding(input)
    }
}
