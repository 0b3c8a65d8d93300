/// Composition g = g_n ∘ … ∘ g_1: the output of each layer is the input of the next.
/// Its backward applies the layers' backward functions in reverse order:
/// B[g, z](v) = B[g_1, z](B[g_2, g_1(z)](… B[g_n, ·](v))).
/// Parameters are named as PyTorch's `nn.Sequential` names them: "<index>.<name>".
public final class Sequential: Module {
    public private(set) var layers: [Module]

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

    public var namedParameters: [(name: String, parameter: Parameter)] {
        layers.enumerated().flatMap { index, layer in
            layer.namedParameters.map { (name: "\(index).\($0.name)", parameter: $0.parameter) }
        }
    }

    public var namedBuffers: [(name: String, buffer: Buffer)] {
        layers.enumerated().flatMap { index, layer in
            layer.namedBuffers.map { (name: "\(index).\($0.name)", buffer: $0.buffer) }
        }
    }

    public var namedCounters: [(name: String, counter: Counter)] {
        layers.enumerated().flatMap { index, layer in
            layer.namedCounters.map { (name: "\(index).\($0.name)", counter: $0.counter) }
        }
    }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        try forward(input, inputGradient: true)
    }

    /// Without an input gradient, the layers before the first one with parameters need no backward
    /// at all, and that one needs none for its input. A BatchNorm followed by a ReLU runs as one
    /// layer (BatchNorm.forward(_:fusingReLU:)): the same bits in one pass over the data each way.
    public func forward(_ input: Tensor, inputGradient: Bool) throws -> (output: Tensor, backward: Backward) {
        let first = inputGradient ? 0 : layers.firstIndex { !$0.namedParameters.isEmpty } ?? layers.count
        var output = input
        var backwards: [Backward] = []
        backwards.reserveCapacity(layers.count)
        var index = 0
        while index < layers.count {
            let step: (output: Tensor, backward: Backward), width: Int
            if let norm = layers[index] as? BatchNorm, index + 1 < layers.count, layers[index + 1] is ReLU {
                (step, width) = (try norm.forward(output, fusingReLU: true), 2)
            } else {
                (step, width) = (try layers[index].forward(output, inputGradient: index > first || inputGradient), 1)
            }
            output = step.output
            if index >= first { backwards.append(step.backward) }
            index += width
        }
        return (output, { gradOutput in
            var grad = gradOutput
            for backward in backwards.reversed() { grad = try backward(grad) }
            return inputGradient ? grad : skippedGradient
        })
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

    public var namedParameters: [(name: String, parameter: Parameter)] { body.namedParameters }

    public var namedBuffers: [(name: String, buffer: Buffer)] { body.namedBuffers }

    public var namedCounters: [(name: String, counter: Counter)] { body.namedCounters }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        try forward(input, inputGradient: true)
    }

    public func forward(_ input: Tensor, inputGradient: Bool) throws -> (output: Tensor, backward: Backward) {
        let (bodyOutput, bodyBackward) = try body.forward(input, inputGradient: inputGradient)
        guard bodyOutput.shape == input.shape else {
            throw BackpropError(.shapeMismatch,
                                "\(self): body output has shape \(describe(bodyOutput.shape)), expected the input's \(describe(input.shape))")
        }
        let output = bodyOutput.adding(input)
        return (output, { gradOutput in
            try checkGradient(gradOutput, matches: output.shape, in: self)
            let bodyGradient = try bodyBackward(gradOutput)
            return inputGradient ? bodyGradient.adding(gradOutput) : skippedGradient
        })
    }
}
