import Foundation

/// The one-line model spec of `bench/modelspec.py`, parsed into a `Sequential`.
///
/// Grammar: layers separated by spaces; a layer is NAME or NAME(ARGS); ARGS are comma-separated
/// positional numbers then KEY=NUMBER pairs; `residual(SPEC)` holds a nested spec whose output is
/// added to its input. For example
/// `conv2d(1,6,5,pad=2) relu maxpool2d(2) flatten linear(1176,10)`.
/// Parameters are named as `nn.Sequential` names them ("3.weight", nested "0.2.bias").
public enum ModelSpec {
    /// One parsed layer: its name, positional and keyword arguments, and (for `residual`) its body.
    public struct Layer: Sendable, Equatable {
        public let name: String
        public let positional: [Double]
        public let keywords: [String: Double]
        public let body: [Layer]
    }

    /// Parses a spec into layers without building them.
    public static func parse(_ spec: String) throws -> [Layer] {
        let layers = try split(spec).map(parseLayer)
        guard !layers.isEmpty else { throw BackpropError(.format, "model spec is empty") }
        return layers
    }

    /// Builds the network a spec describes, its weights initialised from `seed` as PyTorch's defaults.
    public static func build(_ spec: String, seed: UInt64 = 0) throws -> Sequential {
        var generator = SplitMix64(seed: seed)
        return try build(parse(spec), generator: &generator)
    }

    static func build(_ layers: [Layer], generator: inout SplitMix64) throws -> Sequential {
        Sequential(try layers.map { try build($0, generator: &generator) })
    }

    // MARK: - Layers

    private static func build(_ layer: Layer, generator: inout SplitMix64) throws -> Module {
        let args = Arguments(layer: layer)
        switch layer.name {
        case "residual":
            return Residual(try build(layer.body, generator: &generator).layers)
        case "linear":
            try args.expect(positional: 2, keywords: ["bias"])
            return try Linear(args.int(0), args.int(1), bias: args.flag("bias", default: true), seed: generator.next())
        case "conv2d":
            try args.expect(positional: 3, keywords: ["stride", "pad", "dilation", "groups", "bias"])
            return try Conv2D(args.int(0), args.int(1), kernelSize: args.int(2), stride: args.int("stride", default: 1),
                              padding: args.int("pad", default: 0), dilation: args.int("dilation", default: 1),
                              groups: args.int("groups", default: 1), bias: args.flag("bias", default: true),
                              seed: generator.next())
        case "conv_transpose2d":
            try args.expect(positional: 3, keywords: ["stride", "pad", "output_padding", "dilation", "groups", "bias"])
            return try ConvTranspose2D(args.int(0), args.int(1), kernelSize: args.int(2),
                                       stride: args.int("stride", default: 1), padding: args.int("pad", default: 0),
                                       outputPadding: args.int("output_padding", default: 0),
                                       dilation: args.int("dilation", default: 1), groups: args.int("groups", default: 1),
                                       bias: args.flag("bias", default: true), seed: generator.next())
        case "maxpool2d":
            try args.expect(positional: 1, keywords: ["stride", "pad"])
            let kernel = try args.int(0)
            return try MaxPool2D(kernelSize: kernel, stride: args.int("stride", default: kernel), padding: args.int("pad", default: 0))
        case "avgpool2d":
            try args.expect(positional: 1, keywords: ["stride", "pad"])
            let kernel = try args.int(0)
            return try AvgPool2D(kernelSize: kernel, stride: args.int("stride", default: kernel), padding: args.int("pad", default: 0))
        case "global_avgpool2d": try args.expect(positional: 0); return GlobalAvgPool2D()
        case "relu": try args.expect(positional: 0); return ReLU()
        case "sigmoid": try args.expect(positional: 0); return Sigmoid()
        case "tanh": try args.expect(positional: 0); return Tanh()
        case "flatten": try args.expect(positional: 0); return Flatten()
        case "batchnorm2d": try args.expect(positional: 1); return try BatchNorm2D(args.int(0))
        case "batchnorm1d": try args.expect(positional: 1); return try BatchNorm1D(args.int(0))
        case "layernorm": try args.expect(positional: 1); return try LayerNorm(args.int(0))
        default:
            throw BackpropError(.format, "model spec: unknown layer '\(layer.name)'")
        }
    }

    /// Typed access to a layer's arguments, with errors that name the layer.
    private struct Arguments {
        let layer: Layer

        func expect(positional count: Int, keywords allowed: Set<String> = []) throws {
            guard layer.positional.count == count else {
                throw BackpropError(.format, "model spec: \(layer.name) takes \(count) positional arguments, got \(layer.positional.count)")
            }
            if let unknown = layer.keywords.keys.sorted().first(where: { !allowed.contains($0) }) {
                throw BackpropError(.format, "model spec: \(layer.name) has no argument '\(unknown)'")
            }
        }

        func int(_ index: Int) throws -> Int { try whole(layer.positional[index], "argument \(index + 1)") }

        func int(_ key: String, default value: Int) throws -> Int {
            try layer.keywords[key].map { try whole($0, key) } ?? value
        }

        func flag(_ key: String, default value: Bool) throws -> Bool {
            try int(key, default: value ? 1 : 0) != 0
        }

        private func whole(_ value: Double, _ what: String) throws -> Int {
            guard value == value.rounded(), abs(value) < 1e9 else {
                throw BackpropError(.format, "model spec: \(layer.name) \(what) must be a whole number, got \(value)")
            }
            return Int(value)
        }
    }

    // MARK: - Parsing

    /// Top-level layer strings, split at spaces outside parentheses.
    private static func split(_ spec: String) throws -> [String] {
        var parts: [String] = [], current = "", depth = 0
        for character in spec {
            if character == "(" { depth += 1 }
            if character == ")" {
                depth -= 1
                guard depth >= 0 else { throw BackpropError(.format, "model spec: unbalanced ')' in '\(spec)'") }
            }
            if character.isWhitespace && depth == 0 {
                if !current.isEmpty { parts.append(current) }
                current = ""
            } else {
                current.append(character)
            }
        }
        guard depth == 0 else { throw BackpropError(.format, "model spec: unbalanced '(' in '\(spec)'") }
        if !current.isEmpty { parts.append(current) }
        return parts
    }

    private static func parseLayer(_ text: String) throws -> Layer {
        let name = String(text.prefix(while: { $0.isLetter || $0.isNumber || $0 == "_" }))
        var rest = text.dropFirst(name.count)
        guard !name.isEmpty else { throw BackpropError(.format, "model spec: bad layer '\(text)'") }
        if rest.isEmpty { return Layer(name: name, positional: [], keywords: [:], body: []) }
        guard rest.first == "(", rest.last == ")" else {
            throw BackpropError(.format, "model spec: bad layer '\(text)'")
        }
        rest = rest.dropFirst().dropLast()
        if name == "residual" {
            return Layer(name: name, positional: [], keywords: [:], body: try parse(String(rest)))
        }
        var positional: [Double] = [], keywords: [String: Double] = [:]
        for argument in rest.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !argument.isEmpty {
            let pieces = argument.split(separator: "=", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespaces) }
            if pieces.count == 2, !pieces[0].isEmpty, let value = Double(pieces[1]) {
                keywords[pieces[0]] = value
            } else if pieces.count == 1, let value = Double(pieces[0]) {
                guard keywords.isEmpty else {
                    throw BackpropError(.format, "model spec: positional argument after keywords in '\(text)'")
                }
                positional.append(value)
            } else {
                throw BackpropError(.format, "model spec: bad argument '\(argument)' in '\(text)'")
            }
        }
        return Layer(name: name, positional: positional, keywords: keywords, body: [])
    }
}

