import Foundation

/// The one-line model spec of `bench/modelspec.py`, parsed into a `Sequential`.
///
/// Grammar: layers separated by spaces; a layer is NAME or NAME(ARGS); ARGS are comma-separated
/// positional numbers then KEY=NUMBER pairs; `residual(SPEC)` holds a nested spec whose output is
/// added to its input, `checkpoint(SPEC)` a nested spec run with gradient checkpointing (names as
/// residual's). Layer names and their arguments are those of `Layers`. For example
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
        var depth = 0, deepest = 0
        for character in spec where character == "(" || character == ")" {
            depth += character == "(" ? 1 : -1
            deepest = max(deepest, depth)
        }
        guard deepest <= maxNesting else {
            throw BackpropError(
                .format, "model spec: parentheses nest \(deepest) levels deep, at most \(maxNesting) are allowed")
        }
        let layers = try split(spec).map(parseLayer)
        guard !layers.isEmpty else { throw BackpropError(.format, "model spec is empty") }
        return layers
    }

    /// The deepest nesting of parentheses a spec may have (residual blocks within residual blocks).
    static let maxNesting = 32

    /// Builds the network a spec describes, its weights initialised from `seed` as PyTorch's defaults.
    public static func build(_ spec: String, seed: UInt64 = 0) throws -> Sequential {
        var generator = SplitMix64(seed: seed)
        return try build(parse(spec), generator: &generator)
    }

    static func build(_ layers: [Layer], generator: inout SplitMix64) throws -> Sequential {
        Sequential(try layers.map { try build($0, generator: &generator) })
    }

    // MARK: - Layers

    /// `residual(SPEC)` here; every other layer from `Layers`, its positional numbers named as the
    /// kind's `positional` fields.
    private static func build(_ layer: Layer, generator: inout SplitMix64) throws -> Module {
        if layer.name == "residual" { return Residual(try build(layer.body, generator: &generator).layers) }
        if layer.name == "checkpoint" { return Checkpointed(try build(layer.body, generator: &generator)) }
        let kind = try Layers.kind(layer.name)
        guard layer.positional.count == kind.positional.count else {
            throw BackpropError(
                .format,
                "model spec: \(layer.name) takes \(kind.positional.count) positional arguments, got \(layer.positional.count)"
            )
        }
        if let unknown = layer.keywords.keys.sorted().first(where: { !kind.keywords.contains($0) }) {
            throw BackpropError(.format, "model spec: \(layer.name) has no argument '\(unknown)'")
        }
        var fields = layer.keywords.mapValues(JSONValue.number)
        for (key, value) in zip(kind.positional, layer.positional) { fields[key] = .number(value) }
        do {
            return try Layers.build(
                layer.name, JSONFields(fields, context: "model spec: \(layer.name)"), generator: &generator)
        } catch let error as BackpropError where error.kind == .outOfMemory {
            let arguments = layer.positional.map { $0.magnitude < 1e15 && $0 == $0.rounded() ? "\(Int($0))" : "\($0)" }
                .joined(separator: ",")
            throw BackpropError(.outOfMemory, "model spec: \(layer.name)(\(arguments)): \(error.message)")
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
        if name == "residual" || name == "checkpoint" {
            return Layer(name: name, positional: [], keywords: [:], body: try parse(String(rest)))
        }
        var positional: [Double] = [], keywords: [String: Double] = [:]
        for argument in rest.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) })
        where !argument.isEmpty {
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
