import Backprop
import Foundation

/// A text corpus as byte tokens, for a character-level language model: the bytes of a file, or of
/// every regular file of a folder sorted by name (symbolic links and the `fortune` program's
/// `.dat` indexes and `.u8` links left out), concatenated. The vocabulary is the distinct bytes
/// the corpus uses, in increasing order; a token is a byte's index in it. The last 5% is held out
/// for validation.
public struct TextCorpus: Sendable {
    /// The bytes the tokens stand for: token i is byte vocabulary[i].
    public let vocabulary: [UInt8]
    public let train: [Int32]
    public let validation: [Int32]

    /// Debian's `fortunes` package: about 2.5 MB of plain text.
    public static let defaultPath = "/usr/share/games/fortunes"
    static let heldOut = 0.05

    public init(bytes: [UInt8], source: String) throws {
        guard !bytes.isEmpty else { throw BackpropError(.invalidArgument, "\(source): the corpus is empty") }
        var used = [Bool](repeating: false, count: 256)
        for byte in bytes { used[Int(byte)] = true }
        vocabulary = (0..<256).filter { used[$0] }.map(UInt8.init)
        var index = [Int32](repeating: -1, count: 256)
        for (token, byte) in vocabulary.enumerated() { index[Int(byte)] = Int32(token) }
        let tokens = bytes.map { index[Int($0)] }
        let split = Int(Double(tokens.count) * (1 - Self.heldOut))
        (train, validation) = (Array(tokens[..<split]), Array(tokens[split...]))
    }

    /// Reads a file or a folder of them (see the type's description).
    public init(path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            let hint = path == Self.defaultPath ? " (install it with: apt-get install fortunes)" : ""
            throw BackpropError(.invalidArgument, "\(path): no such file or folder\(hint)")
        }
        var files = [path]
        if isDirectory.boolValue {
            let names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
            files = names.filter { !$0.hasSuffix(".dat") && !$0.hasSuffix(".u8") }.map { "\(path)/\($0)" }.filter {
                let attributes = try? FileManager.default.attributesOfItem(atPath: $0)
                return attributes?[.type] as? FileAttributeType == .typeRegular
            }
        }
        var bytes: [UInt8] = []
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw BackpropError(.format, "\(file): cannot be read")
            }
            bytes += data
        }
        try self.init(bytes: bytes, source: path)
    }
}

/// A token sequence cut into `batch` contiguous streams of equal length, read `steps` tokens at a
/// time: update i reads tokens [o, o + steps) of every stream as input and [o + 1, o + steps + 1)
/// as targets, o = i · steps mod (stream length − steps − 1). A pass over the streams starts again
/// from zero state (o < steps); otherwise each update continues where the previous one stopped.
public struct TokenStreams: Sendable {
    public let batch: Int, steps: Int
    /// Tokens per stream.
    public let length: Int
    private let tokens: [Int32]

    public init(_ tokens: [Int32], batch: Int, steps: Int, source: String = "the corpus") throws {
        guard batch > 0, steps > 0 else {
            throw BackpropError(.invalidArgument, "batch (\(batch)) and steps (\(steps)) must be positive")
        }
        length = tokens.count / batch
        guard length >= steps + 2 else {
            throw BackpropError(
                .invalidArgument,
                "\(source) has \(tokens.count) tokens: too short for \(batch) streams of \(steps + 2) tokens or more "
                    + "(one update's input and targets); use a longer corpus or a smaller --batch or --seq")
        }
        (self.tokens, self.batch, self.steps) = (tokens, batch, steps)
    }

    /// Where update `update` starts in every stream.
    public func offset(_ update: Int) -> Int { (update * steps) % (length - steps - 1) }

    /// Whether update `update` starts a pass over the streams (its state starts at zero).
    public func startsPass(_ update: Int) -> Bool { offset(update) < steps }

    /// Input tokens [batch, steps] (as floats, for Embedding) and the targets, row by row.
    public func batch(_ update: Int) -> (input: Tensor, targets: [Int]) {
        window(at: offset(update))
    }

    /// The window of `steps` tokens at `offset` of every stream and the tokens after each.
    public func window(at offset: Int) -> (input: Tensor, targets: [Int]) {
        var input = [Float](), targets = [Int]()
        input.reserveCapacity(batch * steps)
        targets.reserveCapacity(batch * steps)
        for stream in 0..<batch {
            let start = stream * length + offset
            input += tokens[start..<start + steps].map(Float.init)
            targets += tokens[start + 1..<start + steps + 1].map(Int.init)
        }
        return (Tensor(unchecked: [batch, steps], scalars: input), targets)
    }
}
