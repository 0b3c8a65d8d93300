/// Every layer Backprop builds by name: the one table that the model spec, the golden-case runner
/// and the benchmark read. A layer's settings come as named fields (a fixture's params, a
/// benchmark workload's fields, or the model spec's numbers under the names `positional` gives
/// them); every field but the layer's sizes has PyTorch's default.
///
/// The names of fields follow `shared/bench`'s workloads and fixtures: c and k (input and output
/// channels), r and s (kernel height and width; s defaults to r), stride, pad and dilation (a number
/// or a [height, width] pair), in and out (features), d (normalized size).
public enum Layers {
    /// How to build one kind of layer.
    public struct Kind: Sendable {
        public let name: String
        /// The fields the model spec's positional numbers fill, in order: `conv2d(1,6,5)` is c, k, r.
        public let positional: [String]
        /// The fields it may also be given by name.
        public let keywords: [String]
        /// Builds the layer; weights draw their seed from the generator (one draw per layer that has any).
        let make: @Sendable (JSONFields, inout SplitMix64) throws -> Module
    }

    /// The kind named `name`; an `.unsupported` error names an unknown one.
    public static func kind(_ name: String) throws -> Kind {
        guard let kind = table[name] else {
            throw BackpropError(.unsupported, "unknown layer '\(name)'")
        }
        return kind
    }

    /// Builds the layer `name` from `fields`.
    public static func build(_ name: String, _ fields: JSONFields, generator: inout SplitMix64) throws -> Module {
        try kind(name).make(fields, &generator)
    }

    public static var names: [String] { table.keys.sorted() }

    private static let table: [String: Kind] = Dictionary(uniqueKeysWithValues: kinds.map { ($0.name, $0) })

    private static let kinds: [Kind] = [
        Kind(name: "linear", positional: ["in", "out"], keywords: ["bias"]) { f, g in
            try Linear(f.int("in"), f.int("out"), bias: f.bool("bias", default: true), seed: g.next())
        },
        Kind(
            name: "conv2d", positional: ["c", "k", "r"], keywords: ["s", "stride", "pad", "dilation", "groups", "bias"]
        ) { f, g in
            try Conv2D(
                f.int("c"), f.int("k"), kernelSize: kernelSize(f), stride: f.size("stride", default: 1),
                padding: .explicit(f.size("pad", default: 0)), dilation: f.size("dilation", default: 1),
                groups: f.int("groups", default: 1), bias: f.bool("bias", default: true), seed: g.next())
        },
        Kind(
            name: "conv_transpose2d", positional: ["c", "k", "r"],
            keywords: ["s", "stride", "pad", "output_padding", "dilation", "groups", "bias"]
        ) { f, g in
            try ConvTranspose2D(
                f.int("c"), f.int("k"), kernelSize: kernelSize(f), stride: f.size("stride", default: 1),
                padding: .explicit(f.size("pad", default: 0)), outputPadding: f.size("output_padding", default: 0),
                dilation: f.size("dilation", default: 1), groups: f.int("groups", default: 1),
                bias: f.bool("bias", default: true), seed: g.next())
        },
        Kind(name: "maxpool2d", positional: ["r"], keywords: ["s", "stride", "pad", "dilation", "ceil_mode"]) { f, _ in
            let kernel = try kernelSize(f)
            return try MaxPool2D(
                kernelSize: kernel, stride: f.size("stride", default: kernel),
                padding: .explicit(f.size("pad", default: 0)), dilation: f.size("dilation", default: 1),
                ceilMode: f.bool("ceil_mode", default: false))
        },
        Kind(
            name: "avgpool2d", positional: ["r"],
            keywords: ["s", "stride", "pad", "ceil_mode", "count_include_pad", "divisor_override"]
        ) { f, _ in
            let kernel = try kernelSize(f)
            return try AvgPool2D(
                kernelSize: kernel, stride: f.size("stride", default: kernel),
                padding: .explicit(f.size("pad", default: 0)), ceilMode: f.bool("ceil_mode", default: false),
                countIncludePad: f.bool("count_include_pad", default: true),
                divisorOverride: f.has("divisor_override") ? f.int("divisor_override") : nil)
        },
        Kind(name: "adaptive_avgpool2d", positional: ["out_h", "out_w"], keywords: []) { f, _ in
            try AdaptiveAvgPool2D(outputSize: Size2D(f.int("out_h"), f.int("out_w")))
        },
        Kind(name: "adaptive_maxpool2d", positional: ["out_h", "out_w"], keywords: []) { f, _ in
            try AdaptiveMaxPool2D(outputSize: Size2D(f.int("out_h"), f.int("out_w")))
        },
        Kind(name: "global_avgpool2d", positional: [], keywords: []) { _, _ in GlobalAvgPool2D() },
        Kind(name: "batchnorm2d", positional: ["c"], keywords: ["eps", "momentum", "affine"]) { f, _ in
            try BatchNorm2D(
                f.int("c"), eps: Float(f.double("eps", default: 1e-5)),
                momentum: Float(f.double("momentum", default: 0.1)),
                affine: f.bool("affine", default: true))
        },
        Kind(name: "batchnorm1d", positional: ["c"], keywords: ["eps", "momentum", "affine"]) { f, _ in
            try BatchNorm1D(
                f.int("c"), eps: Float(f.double("eps", default: 1e-5)),
                momentum: Float(f.double("momentum", default: 0.1)),
                affine: f.bool("affine", default: true))
        },
        // The normalized shape is d, or the list normalized_shape.
        Kind(name: "layernorm", positional: ["d"], keywords: ["eps", "affine"]) { f, _ in
            try LayerNorm(
                f.has("normalized_shape") ? f.ints("normalized_shape") : [f.int("d")],
                eps: Float(f.double("eps", default: 1e-5)), elementwiseAffine: f.bool("affine", default: true))
        },
        Kind(name: "dropout", positional: ["p"], keywords: []) { f, g in
            try Dropout(probability: Float(f.double("p")), seed: g.next())
        },
        Kind(name: "embedding", positional: ["num_embeddings", "dim"], keywords: ["padding_idx"]) { f, g in
            try Embedding(
                f.int("num_embeddings"), f.int("dim"),
                paddingIndex: f.has("padding_idx") ? f.int("padding_idx") : nil, seed: g.next())
        },
        recurrent("rnn"), recurrent("lstm"), recurrent("gru"),
        Kind(name: "rows", positional: [], keywords: []) { _, _ in Rows() },
        Kind(name: "last", positional: [], keywords: []) { _, _ in LastStep() },
        Kind(name: "relu", positional: [], keywords: []) { _, _ in ReLU() },
        Kind(name: "sigmoid", positional: [], keywords: []) { _, _ in Sigmoid() },
        Kind(name: "tanh", positional: [], keywords: []) { _, _ in Tanh() },
        Kind(name: "gelu", positional: [], keywords: []) { _, _ in GELU() },
        Kind(name: "flatten", positional: [], keywords: []) { _, _ in Flatten() },
    ]

    /// A recurrent layer: input_size and hidden_size, num_layers (the model spec's `layers`),
    /// bidirectional, bias, dropout, batch_first (default true: sequences here are [N, T, F]) and
    /// for `rnn` the nonlinearity ("tanh" or "relu", or the model spec's relu=1).
    private static func recurrent(_ name: String) -> Kind {
        Kind(
            name: name, positional: ["input_size", "hidden_size"],
            keywords: ["layers", "num_layers", "bidirectional", "bias", "dropout", "batch_first"]
                + (name == "rnn" ? ["relu"] : [])
        ) { f, g in try buildRecurrent(name, f, generator: &g) }
    }

    /// The recurrent layer `name` ("rnn", "lstm" or "gru") from `fields`, as `build` makes it, with
    /// its own type for the state-passing forward.
    public static func buildRecurrent(
        _ name: String, _ f: JSONFields, generator g: inout SplitMix64
    ) throws
        -> RecurrentLayer
    {
        do {
            let (input, hidden) = (try f.int("input_size"), try f.int("hidden_size"))
            let layers = try f.int("num_layers", default: f.int("layers", default: 1))
            let (bias, bidirectional) = (try f.bool("bias", default: true), try f.bool("bidirectional", default: false))
            let (dropout, batchFirst) = (
                Float(try f.double("dropout", default: 0)), try f.bool("batch_first", default: true)
            )
            switch name {
            case "lstm":
                return try LSTM(
                    inputSize: input, hiddenSize: hidden, layers: layers, bias: bias, batchFirst: batchFirst,
                    bidirectional: bidirectional, dropout: dropout, seed: g.next())
            case "gru":
                return try GRU(
                    inputSize: input, hiddenSize: hidden, layers: layers, bias: bias, batchFirst: batchFirst,
                    bidirectional: bidirectional, dropout: dropout, seed: g.next())
            case "rnn":
                let relu = try f.bool("relu", default: false) || f.fields["nonlinearity"]?.string == "relu"
                return try RNN(
                    inputSize: input, hiddenSize: hidden, layers: layers, nonlinearity: relu ? .relu : .tanh,
                    bias: bias,
                    batchFirst: batchFirst, bidirectional: bidirectional, dropout: dropout, seed: g.next())
            default:
                throw BackpropError(.unsupported, "unknown recurrent layer '\(name)'")
            }
        }
    }

    /// (r, s): the kernel's height and width; s defaults to r.
    private static func kernelSize(_ f: JSONFields) throws -> Size2D {
        let r = try f.int("r")
        return Size2D(r, try f.int("s", default: r))
    }
}

extension JSONFields {
    /// A per-axis size: a whole number for both axes, or a list of two; `value` when absent.
    func size(_ key: String, default value: Size2D) throws -> Size2D {
        guard has(key) else { return value }
        let (height, width) = try pair(key)
        return Size2D(height, width)
    }
}
