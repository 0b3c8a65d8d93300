import Backprop
/// How each fixture op runs through the public modules: forward in the case's mode, then the
/// backward function with `grad_y` (or a loss's gradient). Each returns the computed tensors by
/// the manifest's output roles.
enum FixtureOperations {
    typealias Operation = @Sendable (FixtureContext) throws -> [String: Tensor]

    static let table: [String: Operation] = [
        "linear": linear,
        "relu": { try forwardBackward(ReLU(), $0) },
        "sigmoid": { try forwardBackward(Sigmoid(), $0) },
        "tanh": { try forwardBackward(Tanh(), $0) },
        "softmax_cross_entropy": { context in
            try lossOutputs(SoftmaxCrossEntropy()(context.input("x"), labels: context.labels()))
        },
        "mse": { context in
            try lossOutputs(MeanSquaredError()(context.input("x"), target: context.input("target")))
        },
        "binary_cross_entropy": { context in
            try lossOutputs(BinaryCrossEntropy()(context.input("x"), target: context.input("target")))
        },
        "conv2d": { context in
            let p = context.params
            let pad = try p.pair("pad")
            let layer = try Conv2D(p.int("c"), p.int("k"), kernelSize: (p.int("r"), p.int("s")),
                                   stride: p.pair("stride"), padding: .explicit(pad.0, pad.1), dilation: p.pair("dilation"), groups: p.int("groups", default: 1),
                                   bias: p.bool("bias", default: true))
            return try loadAndRun(layer, weight: layer.weight, bias: layer.bias, context)
        },
        "conv_transpose2d": { context in
            let p = context.params
            let layer = try ConvTranspose2D(p.int("c"), p.int("k"), kernelSize: (p.int("r"), p.int("s")),
                                            stride: p.pair("stride"), padding: p.pair("pad"),
                                            outputPadding: p.pair("output_padding"), dilation: p.pair("dilation"), groups: p.int("groups", default: 1),
                                            bias: p.bool("bias", default: true))
            return try loadAndRun(layer, weight: layer.weight, bias: layer.bias, context)
        },
        "maxpool2d": { context in
            let p = context.params
            let layer = try MaxPool2D(kernelSize: (p.int("r"), p.int("s")), stride: p.pair("stride"),
                                      padding: p.pair("pad"), dilation: p.pair("dilation"),
                                      ceilMode: p.bool("ceil_mode", default: false))
            return try forwardBackward(layer, context)
        },
        "avgpool2d": { context in
            let p = context.params
            let layer = try AvgPool2D(kernelSize: (p.int("r"), p.int("s")), stride: p.pair("stride"),
                                      padding: p.pair("pad"), ceilMode: p.bool("ceil_mode", default: false),
                                      countIncludePad: p.bool("count_include_pad", default: true),
                                      divisorOverride: p.has("divisor_override") ? p.int("divisor_override") : nil)
            return try forwardBackward(layer, context)
        },
        "adaptive_avgpool2d": { context in
            let p = context.params
            return try forwardBackward(AdaptiveAvgPool2D(outputSize: (p.int("out_h"), p.int("out_w"))), context)
        },
        "batchnorm": { context in
            let p = context.params
            let shape = try p.ints("shape"), affine = try p.bool("affine", default: true)
            let (eps, momentum) = (Float(try p.double("eps")), Float(try p.double("momentum")))
            let layer: BatchNorm = shape.count == 4
                ? try BatchNorm2D(shape[1], eps: eps, momentum: momentum, affine: affine)
                : try BatchNorm1D(shape[1], eps: eps, momentum: momentum, affine: affine)
            layer.isTraining = try p.bool("training", default: true)
            try layer.runningMean?.load(context.input("running_mean"), name: "running_mean")
            try layer.runningVar?.load(context.input("running_var"), name: "running_var")
            if let weight = layer.weight { try weight.load(context.input("weight"), name: "weight") }
            if let bias = layer.bias { try bias.load(context.input("bias"), name: "bias") }
            var outputs = try forwardBackward(layer, context)
            for (name, buffer) in layer.namedBuffers { outputs[name] = buffer.value }
            return outputs
        },
        "layernorm": { context in
            let p = context.params
            let layer = try LayerNorm(p.ints("normalized_shape"), eps: Float(p.double("eps")),
                                      elementwiseAffine: p.bool("affine", default: true))
            if let weight = layer.weight { try weight.load(context.input("weight"), name: "weight") }
            if let bias = layer.bias { try bias.load(context.input("bias"), name: "bias") }
            return try forwardBackward(layer, context)
        },
        "network": network,
    ]

    /// Loads a layer's weight (and bias) from the case, then runs forward and backward.
    static func loadAndRun(_ layer: Module, weight: Parameter, bias: Parameter?, _ context: FixtureContext) throws -> [String: Tensor] {
        try weight.load(context.input("weight"), name: "weight")
        if let bias { try bias.load(context.input("bias"), name: "bias") }
        return try forwardBackward(layer, context)
    }

    /// Runs `module` forward on x and backward on grad_y; returns y, grad_x and every parameter's
    /// gradient as grad_<name>.
    static func forwardBackward(_ module: Module, _ context: FixtureContext) throws -> [String: Tensor] {
        module.zeroGrad()
        let (y, backward) = try module.forward(try context.input("x"))
        var outputs = ["y": y, "grad_x": try backward(try context.input("grad_y"))]
        for (name, parameter) in module.namedParameters { outputs["grad_\(name)"] = parameter.grad }
        return outputs
    }

    static func linear(_ context: FixtureContext) throws -> [String: Tensor] {
        let p = context.params
        let layer = try Linear(p.int("in"), p.int("out"), bias: p.bool("bias", default: true))
        return try loadAndRun(layer, weight: layer.weight, bias: layer.bias, context)
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
        for (name, parameter) in model.namedParameters {
            try parameter.load(context.input(name), name: name)
        }
        for (name, buffer) in model.namedBuffers {
            try buffer.load(context.input(name), name: name)
        }
        let (logits, backward) = try model.forward(context.input("x"))
        let loss = try SoftmaxCrossEntropy()(logits, labels: context.labels())
        _ = try backward(loss.gradient)
        var outputs = ["loss": Tensor(unchecked: [], scalars: [loss.value]), "logits": logits]
        for (name, parameter) in model.namedParameters { outputs["grad_\(name)"] = parameter.grad }
        for (name, buffer) in model.namedBuffers { outputs[name] = buffer.value }
        return outputs
    }
}
