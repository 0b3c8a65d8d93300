import Foundation

/// NumPy `.npy` files (format versions 1.0–3.0, little-endian, C order).
/// Reads float32, float64 and int64 arrays; writes float32.
public enum NPY {
    public static func read(contentsOf url: URL) throws -> StoredArray {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw BackpropError(.format, "\(url.path): cannot read: \(error.localizedDescription)")
        }
        return try parse(data, name: url.path)
    }

    /// Parses the bytes of an `.npy` file; `name` labels errors.
    public static func parse(_ data: Data, name: String) throws -> StoredArray {
        let bytes = [UInt8](data)
        func fail(_ message: String) -> BackpropError { BackpropError(.format, "\(name): \(message)") }
        guard bytes.count >= 10, bytes[0..<6].elementsEqual([0x93] + Array("NUMPY".utf8)) else {
            throw fail("not an .npy file (bad magic)")
        }
        let major = bytes[6]
        let (headerLength, headerStart): (Int, Int)
        switch major {
        case 1: (headerLength, headerStart) = (Int(bytes[8]) | Int(bytes[9]) << 8, 10)
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("truncated header") }
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
            headerStart = 12
        default: throw fail("unsupported .npy version \(major)")
        }
        guard bytes.count >= headerStart + headerLength else { throw fail("truncated header") }
        guard let header = String(bytes: bytes[headerStart..<headerStart + headerLength], encoding: .utf8) else {
            throw fail("the header is not UTF-8 text")
        }
        let descr = try headerValue("descr", in: header, fail: fail)
        let fortran = try headerValue("fortran_order", in: header, fail: fail)
        let shapeText = try headerValue("shape", in: header, fail: fail)
        guard fortran == "False" else { throw fail("Fortran-order arrays are not supported; save with C order") }
        let shape = try parseShape(shapeText, fail: fail)
        guard let count = StoredArray.count(of: shape), count <= bytes.count else {
            throw fail("shape \(describe(shape)) is larger than the file")
        }
        let body = bytes[(headerStart + headerLength)...]
        let kinds: [String: StoredArray.Kind] = ["'<f4'": .float32, "'<f8'": .float64, "'<i8'": .int64]
        guard let kind = kinds[descr] else { throw fail("unsupported dtype \(descr); expected '<f4', '<f8' or '<i8'") }
        guard body.count == count * kind.width else {
            throw fail(
                "\(body.count) data bytes for shape \(describe(shape)) of \(descr), expected \(count * kind.width)")
        }
        return StoredArray(shape: shape, elements: .decode(body, as: kind, count: count))
    }

    /// The bytes of a float32 `.npy` file (version 1.0) holding `tensor`.
    public static func encode(_ tensor: Tensor) -> Data {
        let shape =
            tensor.rank == 1
            ? "(\(tensor.shape[0]),)" : "(" + tensor.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }"
        // Magic (6) + version (2) + length (2) + header, padded with spaces to 64 bytes, ending in \n.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let length = UInt16(header.utf8.count)
        data.append(contentsOf: [UInt8(length & 0xff), UInt8(length >> 8)])
        data.append(contentsOf: Array(header.utf8))
        data.append(contentsOf: StoredArray(tensor).elements.bytes)
        return data
    }

    /// Writes `tensor` as a float32 `.npy` file, atomically.
    public static func write(_ tensor: Tensor, to url: URL) throws {
        try AtomicFile.write(encode(tensor), to: url)
    }

    /// The text of a header key's value: a quoted string, a word, or a parenthesised tuple.
    private static func headerValue(
        _ key: String, in header: String,
        fail: (String) -> BackpropError
    ) throws -> String {
        guard let keyRange = header.range(of: "'\(key)':") else { throw fail("header has no '\(key)'") }
        let rest = header[keyRange.upperBound...].drop(while: { $0 == " " })
        let end: String.Index?
        if rest.first == "(" {
            end = rest.firstIndex(of: ")").map { rest.index(after: $0) }
        } else {
            end = rest.firstIndex(where: { $0 == "," || $0 == "}" })
        }
        guard let end else { throw fail("malformed header value for '\(key)'") }
        return String(rest[..<end]).trimmingCharacters(in: .whitespaces)
    }

    private static func parseShape(_ text: String, fail: (String) -> BackpropError) throws -> [Int] {
        guard text.hasPrefix("("), text.hasSuffix(")") else { throw fail("malformed shape \(text)") }
        let parts = text.dropFirst().dropLast().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        return try parts.filter { !$0.isEmpty }.map {
            guard let size = Int($0), size >= 0 else { throw fail("malformed shape \(text)") }
            return size
        }
    }
}

extension Tensor {
    /// Reads a float32, float64 or int64 `.npy` file as a float32 tensor.
    public init(npy url: URL) throws {
        self = try NPY.read(contentsOf: url).tensor
    }

    /// Writes this tensor as a float32 `.npy` file.
    public func writeNPY(to url: URL) throws {
        try NPY.write(self, to: url)
    }
}
