import Foundation

/// NumPy `.npy` files (format versions 1.0–3.0, little-endian, C order).
/// Reads float32, float64 and int64 arrays; writes float32.
public enum NPY {
    /// The elements of an `.npy` array in their stored type.
    public enum Elements: Sendable, Equatable {
        case float32([Float])
        case float64([Double])
        case int64([Int64])
    }

    /// An array read from a file: its shape and elements.
    public struct Array: Sendable, Equatable {
        public let shape: [Int]
        public let elements: Elements

        /// The elements as float32 (float64 rounds; int64 converts).
        public var tensor: Tensor {
            switch elements {
            case .float32(let values): return Tensor(unchecked: shape, scalars: values)
            case .float64(let values): return Tensor(unchecked: shape, scalars: values.map(Float.init))
            case .int64(let values): return Tensor(unchecked: shape, scalars: values.map(Float.init))
            }
        }

        /// The elements as float64, exactly.
        public var doubles: [Double] {
            switch elements {
            case .float32(let values): return values.map(Double.init)
            case .float64(let values): return values
            case .int64(let values): return values.map(Double.init)
            }
        }

        /// The elements as integers, for labels; throws for float arrays.
        public func integers(file: String) throws -> [Int] {
            guard case .int64(let values) = elements else {
                throw BackpropError(.format, "\(file): expected an int64 array of labels")
            }
            return values.map(Int.init)
        }
    }

    public static func read(contentsOf url: URL) throws -> Array {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw BackpropError(.format, "\(url.path): cannot read: \(error.localizedDescription)")
        }
        return try parse(data, name: url.path)
    }

    /// Parses the bytes of an `.npy` file; `name` labels errors.
    public static func parse(_ data: Data, name: String) throws -> Array {
        let bytes = [UInt8](data)
        func fail(_ message: String) -> BackpropError { BackpropError(.format, "\(name): \(message)") }
        guard bytes.count >= 10, bytes[0..<6].elementsEqual([0x93] + Swift.Array("NUMPY".utf8)) else {
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
        guard bytes.count >= headerStart + headerLength,
              let header = String(bytes: bytes[headerStart..<headerStart + headerLength], encoding: .utf8) else {
            throw fail("truncated header")
        }
        let descr = try headerValue("descr", in: header, fail: fail)
        let fortran = try headerValue("fortran_order", in: header, fail: fail)
        let shapeText = try headerValue("shape", in: header, fail: fail)
        guard fortran == "False" else { throw fail("Fortran-order arrays are not supported; save with C order") }
        let shape = try parseShape(shapeText, fail: fail)
        let (count, overflow) = shape.reduce((1, false)) { acc, size in
            let product = acc.0.multipliedReportingOverflow(by: size)
            return (product.partialValue, acc.1 || product.overflow)
        }
        guard !overflow, count <= bytes.count else {
            throw fail("shape \(describe(shape)) is larger than the file")
        }
        let body = bytes[(headerStart + headerLength)...]
        let width: Int
        switch descr {
        case "'<f4'": width = 4
        case "'<f8'", "'<i8'": width = 8
        default: throw fail("unsupported dtype \(descr); expected '<f4', '<f8' or '<i8'")
        }
        guard body.count == count * width else {
            throw fail("\(body.count) data bytes for shape \(describe(shape)) of \(descr), expected \(count * width)")
        }
        let raw = Swift.Array(body)
        let elements: Elements = raw.withUnsafeBytes { buffer in
            switch descr {
            case "'<f4'":
                return .float32((0..<count).map { Float(bitPattern: UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) })
            case "'<f8'":
                return .float64((0..<count).map { Double(bitPattern: UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))) })
            default:
                return .int64((0..<count).map { Int64(littleEndian: buffer.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) })
            }
        }
        return Array(shape: shape, elements: elements)
    }

    /// The bytes of a float32 `.npy` file (version 1.0) holding `tensor`.
    public static func encode(_ tensor: Tensor) -> Data {
        let shape = tensor.rank == 1 ? "(\(tensor.shape[0]),)" : "(" + tensor.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }"
        // Magic (6) + version (2) + length (2) + header, padded with spaces to 64 bytes, ending in \n.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Swift.Array("NUMPY".utf8) + [1, 0])
        let length = UInt16(header.utf8.count)
        data.append(contentsOf: [UInt8(length & 0xff), UInt8(length >> 8)])
        data.append(contentsOf: Swift.Array(header.utf8))
        for value in tensor.scalars {
            withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) }
        }
        return data
    }

    /// Writes `tensor` as a float32 `.npy` file, atomically.
    public static func write(_ tensor: Tensor, to url: URL) throws {
        do { try encode(tensor).write(to: url, options: .atomic) } catch {
            throw BackpropError(.format, "\(url.path): cannot write: \(error.localizedDescription)")
        }
    }

    /// The text of a header key's value: a quoted string, a word, or a parenthesised tuple.
    private static func headerValue(_ key: String, in header: String,
                                    fail: (String) -> BackpropError) throws -> String {
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
