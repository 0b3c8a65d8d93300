import Foundation

/// The `.safetensors` format (as the `safetensors` Python and Rust libraries write it):
///
///     [8 bytes: N, little-endian u64] [N bytes: JSON header] [data]
///
/// The header maps each tensor's name to {"dtype", "shape", "data_offsets": [begin, end]}, with
/// offsets into the data that follows; an optional "__metadata__" holds string pairs. Tensors are
/// C-order little-endian. Backprop reads and writes F32, F64 and I64.
public enum SafeTensors {
    /// Named arrays and the file's metadata.
    public struct File: Sendable, Equatable {
        public var tensors: [String: StoredArray]
        public var metadata: [String: String]

        public init(tensors: [String: StoredArray] = [:], metadata: [String: String] = [:]) {
            self.tensors = tensors
            self.metadata = metadata
        }
    }

    /// The format's names of the element types Backprop reads and writes.
    private static let dtypes: [String: StoredArray.Kind] = ["F32": .float32, "F64": .float64, "I64": .int64]

    private static func dtype(of elements: StoredArray.Elements) -> String {
        dtypes.first { $0.value == elements.kind }!.key  // every kind has a name
    }

    /// The file's bytes: tensors in name order, the header padded with spaces to a multiple of 8
    /// bytes so every tensor's data starts 8-byte aligned.
    public static func encode(_ file: File) throws -> Data {
        var header: [String: Any] = [:]
        var body: [UInt8] = []
        for name in file.tensors.keys.sorted() {
            let array = file.tensors[name]!
            guard StoredArray.count(of: array.shape) == array.elements.count else {
                throw BackpropError(
                    .shapeMismatch,
                    "safetensors: \(name) has shape \(describe(array.shape)) but \(array.elements.count) elements")
            }
            let begin = body.count
            body += array.elements.bytes
            header[name] = [
                "dtype": dtype(of: array.elements), "shape": array.shape, "data_offsets": [begin, body.count],
            ]
        }
        if !file.metadata.isEmpty { header["__metadata__"] = file.metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        json.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8))
        var data = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(json)
        data.append(contentsOf: body)
        return data
    }

    /// Parses a file's bytes; `name` labels errors. Checks that every tensor's offsets fit its
    /// shape and dtype, lie inside the data and together cover it without overlap.
    public static func decode(_ data: Data, name: String) throws -> File {
        func fail(_ message: String) -> BackpropError { BackpropError(.format, "\(name): \(message)") }
        let bytes = [UInt8](data)
        guard bytes.count >= 8 else {
            throw fail("truncated: \(bytes.count) bytes, expected at least the 8-byte header length")
        }
        let headerLength = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << (8 * UInt64($1)) }
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw fail(
                "truncated: header of \(headerLength) bytes but the file has \(bytes.count - 8) after the length")
        }
        let dataStart = 8 + Int(headerLength)
        let header: [String: JSONValue]
        do {
            guard case .object(let object) = try JSONDecoder().decode(JSONValue.self, from: Data(bytes[8..<dataStart]))
            else {
                throw fail("the header is not a JSON object")
            }
            header = object
        } catch let error as BackpropError { throw error } catch { throw fail("the header is not valid JSON") }
        let dataLength = bytes.count - dataStart
        var file = File()
        var ranges: [(Int, Int, String)] = []
        for (key, value) in header {
            if key == "__metadata__" {
                guard case .object(let pairs) = value else { throw fail("__metadata__ is not an object") }
                for (k, v) in pairs {
                    guard let text = v.string else { throw fail("__metadata__ value of \(k) is not a string") }
                    file.metadata[k] = text
                }
                continue
            }
            let fields = JSONFields(value.object ?? [:], context: "\(name): tensor \(key)")
            let dtypeName = try fields.string("dtype")
            guard let kind = dtypes[dtypeName] else {
                throw BackpropError(
                    .unsupported, "\(name): tensor \(key) has dtype \(dtypeName); Backprop reads F32, F64 and I64")
            }
            let shape = try fields.ints("shape"), offsets = try fields.ints("data_offsets")
            guard offsets.count == 2, let count = StoredArray.count(of: shape) else {
                throw fail("tensor \(key): malformed shape \(shape) or data_offsets \(offsets)")
            }
            let (begin, end) = (offsets[0], offsets[1])
            guard 0 <= begin, begin <= end, end <= dataLength else {
                throw fail(
                    "tensor \(key): data_offsets [\(begin), \(end)] outside the \(dataLength) data bytes (truncated file?)"
                )
            }
            let (bytesNeeded, overflow) = count.multipliedReportingOverflow(by: kind.width)
            guard !overflow, end - begin == bytesNeeded else {
                throw fail(
                    "tensor \(key): \(end - begin) bytes for shape \(describe(shape)) of \(dtypeName), expected "
                        + (overflow ? "more than Int can count" : "\(bytesNeeded)"))
            }
            ranges.append((begin, end, key))
            file.tensors[key] = StoredArray(
                shape: shape, elements: .decode(bytes[(dataStart + begin)..<(dataStart + end)], as: kind, count: count))
        }
        var covered = 0
        for (begin, end, key) in ranges.sorted(by: { ($0.0, $0.1) < ($1.0, $1.1) }) {
            guard begin == covered else {
                throw fail("tensor \(key) starts at byte \(begin), expected \(covered): tensors overlap or leave a gap")
            }
            covered = end
        }
        guard covered == dataLength else { throw fail("\(dataLength - covered) data bytes after the last tensor") }
        return file
    }

    public static func read(contentsOf url: URL) throws -> File {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw BackpropError(.format, "\(url.path): cannot read: \(error.localizedDescription)")
        }
        return try decode(data, name: url.path)
    }

    /// Writes the file atomically: a reader never sees a partly written file.
    public static func write(_ file: File, to url: URL) throws {
        try AtomicFile.write(encode(file), to: url)
    }
}
