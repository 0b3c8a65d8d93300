import Backprop

/// How each fixture op runs through the public modules: forward in the case's mode, then the
/// backward function with `grad_y` (or a loss's gradient). Each returns the computed tensors by
/// the manifest's output roles. An op that names a layer of `Layers` builds it from the case's params.
enum FixtureOperations {
    typealias Operation = @Sendable (FixtureContext) throws -> [String: Tensor]

    /// The op's implementation, or nil when Backprop has none.
    static func operation(_ op: String) -> Operation? {
        if let special = special[op] { return special }
        guard Layers.names.contains(op) else { return nil }
        return { context in try layer(op, context.params, context) }
    }

    /// Ops that are not a layer, or whose params name the layer another way.
    static let special: [String: Operation] = [
        "softmax_cross_entropy": { context in
            try lossOutputs(SoftmaxCrossEntropy()(context.input("x"), labels: context.labels()))
        },
        "mse": { context in
            try lossOutputs(MeanSquaredError()(context.input("x"), target: context.input("target")))
        },
        "binary_cross_entropy": { context in
            try lossOutputs(BinaryCrossEntropy()(context.input("x"), target: context.input("target")))
        },
        // The input's shape tells batchnorm1d from batchnorm2d, and its axis 1 the channels.
        "batchnorm": { context in
            let shape = try context.params.ints("shape")
            guard shape.count >= 2 else {
                throw BackpropError(.format, "fixture \(context.fixture.name): shape needs 2 axes or more")
            }
            var fields = context.fixture.params
            fields["c"] = .number(Double(shape[1]))
            return try layer(
                shape.count == 4 ? "batchnorm2d" : "batchnorm1d", JSONFields(fields, context: context.params.context),
                context)
        },
        "embedding": { context in
            var generator = SplitMix64(seed: 0)
            let module = try Layers.build("embedding", context.params, generator: &generator)
            try loadState(module, context)
            module.zeroGrad()
            let (y, backward) = try module.forwardWithoutInputGradient(context.input("indices"))
            try backward(context.input("grad_y"))
            return parameterGradients(module, into: ["y": y])
        },
        "rnn": { try recurrent("rnn", $0) },
        "lstm": { try recurrent("lstm", $0) },
        "gru": { try recurrent("gru", $0) },
        "network": network,
        "sequence_network": network,
    ]

    /// A recurrent layer from the case's params and weights, from the initial state h0 (and c0)
    /// when `initial_state` (else zeros), backward from grad_y and grad_h_n (and grad_c_n). Returns
    /// y, h_n (c_n), grad_x, grad_h0 (grad_c0) and every parameter's gradient.
    static func recurrent(_ name: String, _ context: FixtureContext) throws -> [String: Tensor] {
        var generator = SplitMix64(seed: 0)
        let layer = try Layers.buildRecurrent(name, context.params, generator: &generator)
        try loadState(layer, context)
        layer.zeroGrad()
        let lstm = name == "lstm"
        let initial =
            try context.params.bool("initial_state", default: false)
            ? RecurrentState(h: try context.input("h0"), c: lstm ? try context.input("c0") : nil) : nil
        let (y, final, backward) = try layer.forward(context.input("x"), state: initial)
        let gradFinal = RecurrentState(h: try context.input("grad_h_n"), c: lstm ? try context.input("grad_c_n") : nil)
        let (dx, dInitial) = try backward(context.input("grad_y"), gradFinal)
        var outputs = ["y": y, "h_n": final.h, "grad_x": dx]
        if let c = final.c { outputs["c_n"] = c }
        if initial != nil {
            outputs["grad_h0"] = dInitial.h
            if let c = dInitial.c { outputs["grad_c0"] = c }
        }
        return parameterGradients(layer, into: outputs)
    }

    /// `outputs` with every parameter's gradient added as grad_<name>.
    static func parameterGradients(_ module: Module, into outputs: [String: Tensor]) -> [String: Tensor] {
        var outputs = outputs
        for (name, parameter) in module.namedParameters { outputs["grad_\(name)"] = parameter.grad }
        return outputs
    }

    /// The layer `name` built from `fields`, in the mode of the case's `training` (default true), with
    /// every parameter and buffer loaded from the input of its name; then forward and backward. Returns
    /// y, grad_x, grad_<name> for each parameter and each buffer's value after the step.
    static func layer(_ name: String, _ fields: JSONFields, _ context: FixtureContext) throws -> [String: Tensor] {
        var generator = SplitMix64(seed: 0)
        let module = try Layers.build(name, fields, generator: &generator)
        module.isTraining = try fields.bool("training", default: true)
        try loadState(module, context)
        var outputs = try forwardBackward(module, context)
        for (name, buffer) in module.namedBuffers { outputs[name] = buffer.value }
        return outputs
    }

    /// Loads every parameter and buffer of `module` from the case's input of the same name.
    static func loadState(_ module: Module, _ context: FixtureContext) throws {
        for (name, parameter) in module.namedParameters { try parameter.load(context.input(name), name: name) }
        for (name, buffer) in module.namedBuffers { try buffer.load(context.input(name), name: name) }
    }

    /// Runs `module` forward on x and backward on grad_y; returns y, grad_x and every parameter's
    /// gradient as grad_<name>.
    static func forwardBackward(_ module: Module, _ context: FixtureContext) throws -> [String: Tensor] {
        module.zeroGrad()
        let (y, backward) = try module.forward(try context.input("x"))
        return parameterGradients(module, into: ["y": y, "grad_x": try backward(try context.input("grad_y"))])
    }

    static func lossOutputs(_ loss: LossOutput) -> [String: Tensor] {
        ["loss": Tensor(unchecked: [], scalars: [loss.value]), "grad_x": loss.gradient]
    }

    /// A model spec trained one step's worth: the mean cross-entropy of its logits, then the
    /// backward pass from that loss. Parameters come from the inputs by their PyTorch names.
    static func network(_ context: FixtureContext) throws -> [String: Tensor] {
        let p = context.params
        guard try p.string("loss") == "cross_entropy" else {
            throw BackpropError(.unsupported, "loss '\(try p.string("loss"))'")
        }
        let model = try ModelSpec.build(p.string("model"))
        model.isTraining = try p.bool("training", default: true)
        try loadState(model, context)
        let (logits, backward) = try model.forward(context.input("x"))
        let loss = try SoftmaxCrossEntropy()(logits, labels: context.labels())
        _ = try backward(loss.gradient)
        var outputs = ["loss": Tensor(unchecked: [], scalars: [loss.value]), "logits": logits]
        for (name, parameter) in model.namedParameters { outputs["grad_\(name)"] = parameter.grad }
        for (name, buffer) in model.namedBuffers { outputs[name] = buffer.value }
        return outputs
    }
}
