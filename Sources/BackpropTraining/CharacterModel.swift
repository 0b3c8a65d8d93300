import Backprop
import Foundation

/// A character-level language model: a model spec over byte tokens [N, T] → logits [N, T, V],
/// with the vocabulary its tokens index (token i is byte vocabulary[i]). The spec may write
/// `vocab` wherever the vocabulary size goes.
public final class CharacterModel {
    /// Embedding 64, two LSTM layers of 256, a linear read-out: `shared/bench/torch_char_lm.py`'s model.
    public static let defaultSpec = "embedding(vocab,64) lstm(64,256,layers=2) linear(256,vocab)"

    /// The spec as given (with `vocab`), and as built.
    public let spec: String, builtSpec: String
    public let vocabulary: [UInt8]
    public let network: Sequential

    public init(spec: String, vocabulary: [UInt8], seed: UInt64) throws {
        guard !vocabulary.isEmpty else { throw BackpropError(.invalidArgument, "the vocabulary is empty") }
        (self.spec, self.vocabulary) = (spec, vocabulary)
        builtSpec = spec.replacingOccurrences(
            of: #"\bvocab\b"#, with: String(vocabulary.count), options: .regularExpression)
        network = try ModelSpec.build(builtSpec, seed: seed)
    }

    /// The file metadata that describes the model: its spec and vocabulary (byte values, JSON).
    public var metadata: [String: String] {
        ["model": spec, "vocabulary": "[" + vocabulary.map(String.init).joined(separator: ",") + "]", "format": "pt"]
    }

    /// The vocabulary a model file's metadata holds.
    static func vocabulary(in metadata: [String: String], source: String) throws -> [UInt8] {
        guard let text = metadata["vocabulary"], let data = text.data(using: .utf8),
            let values = try? JSONDecoder().decode([Int].self, from: data),
            values.allSatisfy({ (0..<256).contains($0) })
        else {
            throw BackpropError(
                .format, "\(source): no vocabulary in its metadata (is it a model from backprop train-text?)")
        }
        return values.map(UInt8.init)
    }

    /// A model saved by `backprop train-text` (model.safetensors or checkpoint.safetensors).
    public static func load(contentsOf url: URL) throws -> CharacterModel {
        let file = try SafeTensors.read(contentsOf: url)
        guard let spec = file.metadata["model"] else {
            throw BackpropError(.format, "\(url.path): no model spec in its metadata")
        }
        let model = try CharacterModel(
            spec: spec, vocabulary: vocabulary(in: file.metadata, source: url.path), seed: 0)
        try Checkpoint.load(TrainingCheckpoint.split(file.tensors).model, into: model.network, source: url.path)
        return model
    }

    /// The token of each byte of `text`, or a thrown error naming the first byte the vocabulary lacks.
    public func tokens(of text: [UInt8]) throws -> [Int] {
        try text.map { byte in
            guard let token = vocabulary.firstIndex(of: byte) else {
                throw BackpropError(.invalidArgument, "byte \(byte) of the text is not in the model's vocabulary")
            }
            return token
        }
    }

    /// `length` bytes drawn one at a time from softmax(logits / temperature) after `prime` (which
    /// the model reads first; empty: it starts from a newline, or the first byte of its
    /// vocabulary), the state carried from byte to byte. The same seed gives the same text.
    public func sample(prime: [UInt8], length: Int, temperature: Float, seed: UInt64) throws -> [UInt8] {
        guard temperature > 0, temperature.isFinite else {
            throw BackpropError(.invalidArgument, "the temperature must be a positive number, got \(temperature)")
        }
        guard length >= 0 else { throw BackpropError(.invalidArgument, "the length must be >= 0, got \(length)") }
        var generator = SplitMix64(seed: seed)
        let start = prime.isEmpty ? [vocabulary.contains(10) ? 10 : vocabulary[0]] : prime
        return try network.evaluating {
            var (logits, states, _) = try network.forward(
                Tensor(shape: [1, start.count], scalars: try tokens(of: start).map(Float.init)), states: [])
            var text: [UInt8] = []
            for _ in 0..<length {
                let classes = vocabulary.count, last = logits.scalars.suffix(classes)
                let top = last.max() ?? 0
                let weights = last.map { exp(Double(($0 - top) / temperature)) }
                var pick = Double.random(in: 0..<1, using: &generator) * weights.reduce(0, +), token = classes - 1
                for (index, weight) in weights.enumerated() {
                    if pick < weight {
                        token = index
                        break
                    }
                    pick -= weight
                }
                text.append(vocabulary[token])
                (logits, states, _) = try network.forward(
                    Tensor(shape: [1, 1], scalars: [Float(token)]), states: states.map(Optional.some))
            }
            return text
        }
    }
}
