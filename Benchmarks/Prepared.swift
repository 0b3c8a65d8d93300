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
    /// For networks: the most bytes of tensor storage one forward and backward had alive at once.
    var peakStepBytes: Int? = nil
    /// What the check before timing found but did not stop the timing for (a whole network's
    /// finite-difference check), to print beside the row.
    var warning: String? = nil
}

/// Builds each workload's module on its shape (and on a small copy of it for the check), checks
/// the small copy, and prepares the timed phases. A layer op is built by `Layers` from the
/// workload's fields; an op or layer the library cannot build throws an `.unsupported` error, which
/// the harness reports as skipped.
enum Preparation {
    static func prepare(_ workload: Workload) throws -> Prepared {
        try workload.checkSizes()
        switch workload.op {
        case "softmax_cross_entropy": return try softmaxCrossEntropy(workload.fields)
        case "network": return try network(workload.fields)
        case "sequence_network": return try sequenceNetwork(workload.fields)
        case let op where Layers.names.contains(op): return try layer(op, workload.fields)
        default: throw BackpropError(.unsupported, "op '\(workload.op)' is not supported")
        }
    }

    // MARK: - Layers

    /// The layer `op` on its input: [n, c, h, w] for images, [rows, d] for layer norm, [n, in] for
    /// linear layers. Checked first on a small copy of itself: by finite differences, and for linear
    /// layers also against the plain-loop reference.
    static func layer(_ op: String, _ fields: JSONFields) throws -> Prepared {
        let small = smallCopy(fields)
        let smallModule = try build(op, small)
        if op == "linear" {
            try checkedInFloat32 {
                try checkLinear(
                    smallModule, rows: small.int("n"), inFeatures: small.int("in"), outFeatures: small.int("out"))
            }
        }
        let tokens = op == "embedding"  // integer indices: no input gradient
        let checkInput = try input(op, small, seed: 10)
        let report = try checkedInFloat32 {
            try GradientCheck.run(
                smallModule, input: checkInput, epsilon: 1e-2, maxChecksPerTensor: 50, checkInput: !tokens)
        }
        guard report.passed else { throw BackpropError(.numerical, "\(report)") }

        let module = try build(op, fields), input = try input(op, fields, seed: 11)
        let output = try module(input)
        var prepared = try moduleWorkload(module, input: input, inputGradient: !tokens)
        switch op {
        case "linear":
            let flops = 2 * Double(output.count) * Double(try fields.int("in"))
            prepared.flops = (flops, 2 * flops)
        case "conv2d", "conv_transpose2d":
            let flops = 2 * Double(try convolutionMultiplyAdds(op, fields, input: input.shape, output: output.shape))
            prepared.flops = (flops, 2 * flops)
        case "rnn", "lstm", "gru":
            // Multiply-adds of the input and hidden products, every layer and direction and step;
            // the backward does twice as many.
            let (hidden, layers) = (try fields.int("hidden_size"), try fields.int("num_layers", default: 1))
            let directions = try fields.bool("bidirectional", default: false) ? 2 : 1
            let gates = ["rnn": 1, "lstm": 4, "gru": 3][op]!
            var terms = 0
            for layer in 0..<layers {
                terms += (layer == 0 ? try fields.int("input_size") : hidden * directions) + hidden
            }
            let flops = 2 * Double(try fields.int("n") * fields.int("t") * directions * gates * hidden * terms)
            prepared.flops = (flops, 2 * flops)
        case "embedding":
            // Bytes once: the rows gathered and written forward; their gradients read and added backward.
            prepared.bytes = (8 * Double(output.count), 12 * Double(output.count))
        case "batchnorm2d", "layernorm":
            // Bytes once: x read and u written forward; v and x read, ∂J/∂x written backward.
            prepared.bytes = (8 * Double(input.count), 12 * Double(input.count))
        default:
            // Bytes read and written once: x and u (and max pooling's one-byte argmax) forward; v and ∂J/∂x backward.
            let indexBytes = op.hasPrefix("max") ? Double(output.count) : 0
            let moved = 4 * Double(input.count + output.count) + indexBytes
            prepared.bytes = (moved, moved)
        }
        return prepared
    }

    static func build(_ op: String, _ fields: JSONFields) throws -> Module {
        var generator = SplitMix64(seed: 1)
        return try Layers.build(op, fields, generator: &generator)
    }

    /// The layer's input: random values in [−2, 2), or for an embedding random indices.
    static func input(_ op: String, _ fields: JSONFields, seed: UInt64) throws -> Tensor {
        guard op == "embedding" else { return randomTensor(try inputShape(op, fields), seed: seed, -2, 2) }
        return try tokens([fields.int("n"), fields.int("t")], below: fields.int("num_embeddings"), seed: seed)
    }

    /// Whole numbers in [0, count) as a float tensor of `shape`.
    static func tokens(_ shape: [Int], below count: Int, seed: UInt64) throws -> Tensor {
        var random = TestRandom(seed: seed)
        return try Tensor(
            shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in Float(random.next() % UInt64(count)) })
    }

    static func inputShape(_ op: String, _ fields: JSONFields) throws -> [Int] {
        if fields.has("t") && fields.has("input_size") {
            return [try fields.int("n"), try fields.int("t"), try fields.int("input_size")]
        }
        if fields.has("h") {
            return [try fields.int("n"), try fields.int("c"), try fields.int("h"), try fields.int("w")]
        }
        if fields.has("rows") { return [try fields.int("rows"), try fields.int("d")] }
        if fields.has("in") { return [try fields.int("n"), try fields.int("in")] }
        throw BackpropError(.unsupported, "op '\(op)': no input shape among the fields (n, c, h, w / rows, d / n, in)")
    }

    /// The workload's fields with its sizes cut down for the check: 2 images, at most 2 groups of at
    /// most 4 channels, at most 9x9 pixels, and small feature counts.
    static func smallCopy(_ fields: JSONFields) -> JSONFields {
        var small = fields.fields
        func cap(_ key: String, _ limit: Int) {
            if let value = fields.fields[key]?.number { small[key] = .number(min(value, Double(limit))) }
        }
        cap("n", 2)
        cap("h", 9)
        cap("w", 9)
        cap("in", 9)
        cap("out", 7)
        cap("rows", 3)
        cap("d", 16)
        cap("t", 7)
        cap("input_size", 5)
        cap("hidden_size", 6)
        cap("num_embeddings", 40)
        cap("dim", 8)
        let groups = min((try? fields.int("groups", default: 1)) ?? 1, 2)
        for key in ["c", "k"] {
            if let value = try? fields.int(key) {
                let perGroup = value / max((try? fields.int("groups", default: 1)) ?? 1, 1)
                small[key] = .number(Double(groups * min(perGroup, 4)))
            }
        }
        if fields.has("groups") { small["groups"] = .number(Double(groups)) }
        return JSONFields(small, context: fields.context + " (small copy)")
    }

    // MARK: - Losses and networks

    static func softmaxCrossEntropy(_ f: JSONFields) throws -> Prepared {
        let (n, classes) = (try f.int("n"), try f.int("classes"))
        try checkSoftmaxCrossEntropy(rows: min(n, 5), classes: min(classes, 11))
        let logits = randomTensor([n, classes], seed: 3, -4, 4)
        let labels = (0..<n).map { ($0 * 7919) % classes }
        let loss = SoftmaxCrossEntropy()
        let (_, backward) = try loss.forward(logits, labels: labels)
        let size = 4 * Double(n) * Double(classes)
        return Prepared(
            forward: { _ = try loss.forward(logits, labels: labels) },
            backward: { _ = backward() },
            bytes: (size, 2 * size))
    }

    static func network(_ f: JSONFields) throws -> Prepared {
        let spec = try f.string("model")
        let shape = [try f.int("n"), try f.int("c"), try f.int("h"), try f.int("w")]
        let model = try ModelSpec.build(spec, seed: 1)
        // checkpoint_segments: gradient checkpointing in that many segments (absent: none).
        try model.checkpoint(segments: f.has("checkpoint_segments") ? f.int("checkpoint_segments") : nil)
        let small = [min(shape[0], 2)] + shape.dropFirst()
        // Each checked point costs two forwards of the whole network: 4 a tensor past 16 × 16 pixels.
        let points = shape[2] * shape[3] > 256 ? 4 : 20
        let report = try checkedInFloat32 {
            try GradientCheck.run(model, input: randomTensor(small, seed: 4), maxChecksPerTensor: points)
        }
        var prepared = try networkWorkload(model, input: randomTensor(shape, seed: 5), classes: 10)
        // Float32 finite differences lose accuracy through many layers (a deep conv–batchnorm–ReLU
        // stack can miss the tolerance with correct gradients); every layer has passed its own
        // check against references and golden cases, so a network's is reported, not fatal.
        if !report.passed {
            let failing = report.entries.filter { !$0.passed }.map { "\($0.name) \($0.maxError)" }
            prepared.warning =
                "the whole network's finite-difference check missed its tolerance (\(failing.joined(separator: ", "))); timed anyway"
        }
        return prepared
    }

    /// A model spec on tokens [n, t] with the mean cross-entropy of every step's logits over
    /// `classes` classes; the backward computes the parameter gradients only (tokens have none).
    static func sequenceNetwork(_ f: JSONFields) throws -> Prepared {
        let (n, t, classes) = (try f.int("n"), try f.int("t"), try f.int("classes"))
        let model = try ModelSpec.build(f.string("model"), seed: 1)
        let report = try checkedInFloat32 {
            try GradientCheck.run(
                model, input: tokens([min(n, 2), min(t, 5)], below: classes, seed: 4), maxChecksPerTensor: 20,
                checkInput: false)
        }
        guard report.passed else { throw BackpropError(.numerical, "\(report)") }
        let input = try tokens([n, t], below: classes, seed: 5), labels = (0..<n * t).map { ($0 * 7919) % classes }
        let loss = SoftmaxCrossEntropy()
        let (logits, backward) = try model.forwardWithoutInputGradient(input)
        let (_, lossBackward) = try loss.forward(logits, labels: labels)
        return Prepared(
            forward: { _ = try loss.forward(model.forward(input).output, labels: labels) },
            backward: { try backward(lossBackward()) })
    }

    // MARK: - Phases

    /// Forward in training mode; backward from a fixed upstream gradient into every parameter and
    /// (with `inputGradient`) the input; gradients accumulate across repetitions, which costs the
    /// same as overwriting.
    static func moduleWorkload(_ module: Module, input: Tensor, inputGradient: Bool = true) throws -> Prepared {
        if !inputGradient {
            let (output, backward) = try module.forwardWithoutInputGradient(input)
            let upstream = randomTensor(output.shape, seed: 6)
            return Prepared(forward: { _ = try module.forward(input) }, backward: { try backward(upstream) })
        }
        let (output, backward) = try module.forward(input)
        let upstream = randomTensor(output.shape, seed: 6)
        return Prepared(forward: { _ = try module.forward(input) }, backward: { _ = try backward(upstream) })
    }

    /// The network's forward and its mean cross-entropy over `classes` classes; the backward starts
    /// from that loss.
    static func networkWorkload(_ model: Module, input: Tensor, classes: Int) throws -> Prepared {
        let labels = (0..<input.shape[0]).map { $0 % classes }
        let loss = SoftmaxCrossEntropy()
        let peak = try TensorMemory.measure {
            let (logits, backward) = try model.forward(input)
            _ = try backward(try loss(logits, labels: labels).gradient)
        }.peakBytes
        let (logits, backward) = try model.forward(input)
        let (_, lossBackward) = try loss.forward(logits, labels: labels)
        return Prepared(
            forward: { _ = try loss.forward(model.forward(input).output, labels: labels) },
            backward: { _ = try backward(lossBackward()) }, peakStepBytes: peak)
    }

    // MARK: - Checks against the plain-loop references

    /// The linear layer's forward against bp_linear_forward_ref, on its own weight and bias.
    static func checkLinear(_ layer: Module, rows n: Int, inFeatures: Int, outFeatures: Int) throws {
        let x = randomTensor([n, inFeatures], seed: 8)
        let parameters = Dictionary(uniqueKeysWithValues: layer.namedParameters.map { ($0.name, $0.parameter.value) })
        var reference = [Float](repeating: 0, count: n * outFeatures)
        bp_linear_forward_ref(
            &reference, x.scalars, parameters["weight"]?.scalars ?? [], parameters["bias"]?.scalars,
            Int64(n), Int64(inFeatures), Int64(outFeatures))
        try expectClose(try layer(x).scalars, reference, "Linear forward against bp_linear_forward_ref")
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

/// `body` with float32 products: the checks before timing compare against float32 references and
/// finite differences, whatever precision the timing runs in.
func checkedInFloat32<R>(_ body: () throws -> R) rethrows -> R {
    try Precision.$current.withValue(.fp32) { try body() }
}

extension Preparation {
    /// The multiply-adds of a convolution that touch its input: those of taps in the padding are
    /// not counted (the kernels that skip them do not do them). For a transposed convolution, those
    /// of the convolution it is the adjoint of (its output as that one's input).
    static func convolutionMultiplyAdds(_ op: String, _ fields: JSONFields, input: [Int], output: [Int]) throws -> Int {
        let (stride, pad, dilation) = (
            try fields.int("stride", default: 1), try fields.int("pad", default: 0),
            try fields.int("dilation", default: 1)
        )
        let (r, groups) = (try fields.int("r"), try fields.int("groups", default: 1))
        let s = try fields.int("s", default: r)
        // The convolution's image [c, h, w] in and [k, outH, outW] out.
        let (image, result) = op == "conv2d" ? (input, output) : (output, input)
        let (c, k) = (image[1], result[1])
        let rows = insideTaps(
            outputs: result[2], inputs: image[2], kernel: r, stride: stride, pad: pad, dilation: dilation)
        let columns = insideTaps(
            outputs: result[3], inputs: image[3], kernel: s, stride: stride, pad: pad, dilation: dilation)
        return image[0] * k * (c / groups) * rows * columns
    }

    /// Σ over output positions o of the kernel positions i whose input o · stride − pad + i · dilation
    /// is inside [0, inputs).
    static func insideTaps(outputs: Int, inputs: Int, kernel: Int, stride: Int, pad: Int, dilation: Int) -> Int {
        (0..<outputs).reduce(0) { sum, o in
            sum + (0..<kernel).filter { (0..<inputs).contains(o * stride - pad + $0 * dilation) }.count
        }
    }
}
