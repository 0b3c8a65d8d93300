import Backprop
import BackpropTestSupport
import CKernels

/// A workload made ready to time: its two phases as closures over fixed inputs, and the work each
/// phase does (FLOPs for compute-bound ops, bytes moved for memory-bound ones).
struct Prepared {
    let forward: () throws -> Void
    let backward: () throws -> Void
    var flops: (forward: Double, backward: Double)? = nil
    var bytes: (forward: Double, backward: Double)? = nil
}

/// Builds each op's module on the workload's shape (and on a small copy of it for the check),
/// checks the small copy, and prepares the timed phases. Ops the library cannot run yet throw
/// an `.unsupported` error, which the harness reports as skipped.
enum Preparation {
    static func prepare(_ workload: Workload) throws -> Prepared {
        let f = workload.fields
        switch workload.op {
        case "linear":
            let (n, inF, outF) = (try f.int("n"), try f.int("in"), try f.int("out"))
            try checkLinear(n: min(n, 4), inFeatures: min(inF, 9), outFeatures: min(outF, 7))
            let flops = 2 * Double(n) * Double(inF) * Double(outF)
            var prepared = try moduleWorkload(try Linear(inF, outF, seed: 1), input: randomTensor([n, inF], seed: 2))
            prepared.flops = (flops, 2 * flops)
            return prepared
        case "conv2d", "conv_transpose2d":
            let (n, c, h, w, k) = (try f.int("n"), try f.int("c"), try f.int("h"), try f.int("w"), try f.int("k"))
            let (r, s) = (try f.int("r"), try f.int("s"))
            let (stride, pad, groups) = (try f.int("stride", default: 1), try f.int("pad", default: 0), try f.int("groups", default: 1))
            let transposed = workload.op == "conv_transpose2d"
            func make(_ c: Int, _ k: Int, groups: Int) throws -> Module {
                transposed
                    ? try ConvTranspose2D(c, k, kernelSize: (r, s), stride: (stride, stride), padding: (pad, pad), groups: groups, seed: 1)
                    : try Conv2D(c, k, kernelSize: (r, s), stride: (stride, stride), padding: .explicit(pad, pad), groups: groups, seed: 1)
            }
            // The check: a copy with 2 images, at most 2 groups of 4 channels, at most 9x9 pixels.
            let smallGroups = min(groups, 2)
            let (smallC, smallK) = (smallGroups * min(c / groups, 4), smallGroups * min(k / groups, 4))
            let report = try GradientCheck.run(make(smallC, smallK, groups: smallGroups),
                                               input: randomTensor([2, smallC, min(h, 9), min(w, 9)], seed: 10),
                                               maxChecksPerTensor: 50)
            guard report.passed else { throw BackpropError(.numerical, "\(workload.name): \(report)") }
            let module = try make(c, k, groups: groups), input = randomTensor([n, c, h, w], seed: 11)
            // Multiply-adds of the convolution (for the transpose, the one it is the adjoint of):
            // each of its output elements sums (its input channels / groups) · r · s products.
            let output = try module(input)
            let (convOutput, convInputChannels) = transposed ? (input.count, k) : (output.count, c)
            let flops = 2 * Double(convOutput) * Double(convInputChannels / groups * r * s)
            var prepared = try moduleWorkload(module, input: input)
            prepared.flops = (flops, 2 * flops)
            return prepared
        case "maxpool2d", "avgpool2d", "global_avgpool2d":
            let shape = [try f.int("n"), try f.int("c"), try f.int("h"), try f.int("w")]
            func make() throws -> Module {
                switch workload.op {
                case "maxpool2d":
                    return try MaxPool2D(kernelSize: (f.int("r"), f.int("s")), stride: (f.int("stride"), f.int("stride")),
                                         padding: (f.int("pad", default: 0), f.int("pad", default: 0)))
                case "avgpool2d":
                    return try AvgPool2D(kernelSize: (f.int("r"), f.int("s")), stride: (f.int("stride"), f.int("stride")),
                                         padding: (f.int("pad", default: 0), f.int("pad", default: 0)))
                default: return GlobalAvgPool2D()
                }
            }
            let module = try make()
            let report = try GradientCheck.run(module, input: randomTensor([2, 2, min(shape[2], 9), min(shape[3], 9)], seed: 12),
                                               epsilon: 1e-2)
            guard report.passed else { throw BackpropError(.numerical, "\(workload.name): \(report)") }
            let input = randomTensor(shape, seed: 13)
            let output = try module(input)
            // Bytes read and written once: x and u (and the one-byte argmax) forward; v and ∂J/∂x backward.
            let indexBytes = workload.op == "maxpool2d" ? Double(output.count) : 0
            let moved = 4 * Double(input.count + output.count) + indexBytes
            var prepared = try moduleWorkload(module, input: input)
            prepared.bytes = (moved, moved)
            return prepared
        case "batchnorm2d", "layernorm":
            let batch = workload.op == "batchnorm2d"
            let shape = batch ? [try f.int("n"), try f.int("c"), try f.int("h"), try f.int("w")] : [try f.int("rows"), try f.int("d")]
            let module: Module = batch ? try BatchNorm2D(shape[1]) : try LayerNorm(shape[1])
            let small: Module = batch ? try BatchNorm2D(min(shape[1], 4)) : try LayerNorm(min(shape[1], 16))
            let smallShape = batch ? [2, min(shape[1], 4), 5, 5] : [3, min(shape[1], 16)]
            let report = try GradientCheck.run(small, input: randomTensor(smallShape, seed: 14, -2, 2), epsilon: 1e-2)
            guard report.passed else { throw BackpropError(.numerical, "\(workload.name): \(report)") }
            let input = randomTensor(shape, seed: 15)
            // Bytes once: x read and u written forward; v and x read, ∂J/∂x written backward.
            var prepared = try moduleWorkload(module, input: input)
            prepared.bytes = (8 * Double(input.count), 12 * Double(input.count))
            return prepared
        case "softmax_cross_entropy":
            let (n, classes) = (try f.int("n"), try f.int("classes"))
            try checkSoftmaxCrossEntropy(rows: min(n, 5), classes: min(classes, 11))
            let logits = randomTensor([n, classes], seed: 3, -4, 4)
            let labels = (0..<n).map { ($0 * 7919) % classes }
            let loss = SoftmaxCrossEntropy()
            let (_, backward) = try loss.forward(logits, labels: labels)
            let size = 4 * Double(n) * Double(classes)
            return Prepared(forward: { _ = try loss.forward(logits, labels: labels) },
                            backward: { _ = backward() },
                            bytes: (size, 2 * size))
        case "network":
            let spec = try f.string("model")
            let shape = [try f.int("n"), try f.int("c"), try f.int("h"), try f.int("w")]
            let model = try ModelSpec.build(spec, seed: 1)
            let small = [min(shape[0], 2)] + shape.dropFirst()
            let report = try GradientCheck.run(model, input: randomTensor(small, seed: 4), maxChecksPerTensor: 20)
            guard report.passed else { throw BackpropError(.numerical, "\(workload.name): \(report)") }
            return try networkWorkload(model, input: randomTensor(shape, seed: 5), classes: 10)
        default:
            throw BackpropError(.unsupported, "op '\(workload.op)' is not supported")
        }
    }

    // MARK: - Phases

    /// Forward in training mode; backward from a fixed upstream gradient into the input and every
    /// parameter (gradients accumulate across repetitions, which costs the same as overwriting).
    static func moduleWorkload(_ module: Module, input: Tensor) throws -> Prepared {
        let (output, backward) = try module.forward(input)
        let upstream = randomTensor(output.shape, seed: 6)
        return Prepared(forward: { _ = try module.forward(input) }, backward: { _ = try backward(upstream) })
    }

    /// The network's forward and its mean cross-entropy over `classes` classes; the backward starts
    /// from that loss.
    static func networkWorkload(_ model: Module, input: Tensor, classes: Int) throws -> Prepared {
        let labels = (0..<input.shape[0]).map { $0 % classes }
        let loss = SoftmaxCrossEntropy()
        let (logits, backward) = try model.forward(input)
        let (_, lossBackward) = try loss.forward(logits, labels: labels)
        return Prepared(forward: { _ = try loss.forward(model.forward(input).output, labels: labels) },
                        backward: { _ = try backward(lossBackward()) })
    }

    // MARK: - Checks on a small copy of the shape

    static func checkLinear(n: Int, inFeatures: Int, outFeatures: Int) throws {
        let layer = try Linear(inFeatures, outFeatures, seed: 7)
        let x = randomTensor([n, inFeatures], seed: 8)
        var reference = [Float](repeating: 0, count: n * outFeatures)
        bp_linear_forward_ref(&reference, x.scalars, layer.weight.value.scalars, layer.bias!.value.scalars,
                              Int64(n), Int64(inFeatures), Int64(outFeatures))
        try expectClose(try layer(x).scalars, reference, "Linear forward against bp_linear_forward_ref")
        let report = try GradientCheck.run(layer, input: x)
        guard report.passed else { throw BackpropError(.numerical, "\(report)") }
    }

    static func checkSoftmaxCrossEntropy(rows: Int, classes: Int) throws {
        let logits = randomTensor([rows, classes], seed: 9, -4, 4)
        let labels = (0..<rows).map { $0 % classes }
        let output = try SoftmaxCrossEntropy()(logits, labels: labels)
        var reference = [Float](repeating: 0, count: logits.count)
        let value = bp_softmax_xent_ref(&reference, logits.scalars, labels.map(Int64.init), Int64(rows), Int64(classes))
        try expectClose([output.value], [Float(value)], "SoftmaxCrossEntropy loss against bp_softmax_xent_ref")
        try expectClose(output.gradient.scalars, reference, "SoftmaxCrossEntropy gradient against bp_softmax_xent_ref")
    }

    static func expectClose(_ actual: [Float], _ expected: [Float], _ what: String) throws {
        let scale = expected.map(abs).max() ?? 0
        let error = zip(actual, expected).map { abs($0 - $1) }.max() ?? 0
        guard error <= 1e-5 * max(scale, 1) else {
            throw BackpropError(.numerical, "check failed: \(what): max error \(error)")
        }
    }
}
