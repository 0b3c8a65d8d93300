import Foundation

/// An array as a file stores it (`.npy`, `.safetensors`): a shape and little-endian elements of
/// one of the element types Backprop reads.
public struct StoredArray: Sendable, Equatable {
    /// The elements in their stored type.
    public enum Elements: Sendable, Equatable {
        case float32([Float])
        case float64([Double])
        case int64([Int64])

        /// The element type.
        var kind: Kind {
            switch self {
            case .float32: .float32
            case .float64: .float64
            case .int64: .int64
            }
        }

        /// The element count.
        var count: Int {
            switch self {
            case .float32(let values): values.count
            case .float64(let values): values.count
            case .int64(let values): values.count
            }
        }

        /// Reads `count` elements of type `kind` from little-endian `bytes`
        /// (which must hold exactly count · width bytes).
        static func decode(_ bytes: ArraySlice<UInt8>, as kind: Kind, count: Int) -> Elements {
            Array(bytes).withUnsafeBytes { buffer in
                switch kind {
                case .float32:
                    .float32(
                        (0..<count).map {
                            Float(
                                bitPattern: UInt32(
                                    littleEndian: buffer.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))
                        })
                case .float64:
                    .float64(
                        (0..<count).map {
                            Double(
                                bitPattern: UInt64(
                                    littleEndian: buffer.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self)))
                        })
                case .int64:
                    .int64(
                        (0..<count).map {
                            Int64(littleEndian: buffer.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))
                        })
                }
            }
        }

        /// The elements as little-endian bytes.
        var bytes: [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(count * kind.width)
            switch self {
            case .float32(let values):
                for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
            case .float64(let values):
                for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
            case .int64(let values):
                for v in values { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
            }
            return out
        }
    }

    /// The element types, without values.
    enum Kind {
        case float32, float64, int64

        var width: Int { self == .float32 ? 4 : 8 }
    }

    public let shape: [Int]
    public let elements: Elements

    public init(shape: [Int], elements: Elements) {
        self.shape = shape
        self.elements = elements
    }

    /// A float32 array holding `tensor`.
    public init(_ tensor: Tensor) {
        self.init(shape: tensor.shape, elements: .float32(tensor.scalars))
    }

    /// The elements as float32 (float64 rounds; int64 converts).
    public var tensor: Tensor {
        switch elements {
        case .float32(let values): Tensor(unchecked: shape, scalars: values)
        case .float64(let values): Tensor(unchecked: shape, scalars: values.map(Float.init))
        case .int64(let values): Tensor(unchecked: shape, scalars: values.map(Float.init))
        }
    }

    /// The elements as float64, exactly.
    public var doubles: [Double] {
        switch elements {
        case .float32(let values): values.map(Double.init)
        case .float64(let values): values
        case .int64(let values): values.map(Double.init)
        }
    }

    /// The elements as integers, for labels; throws for float arrays.
    public func integers(file: String) throws -> [Int] {
        guard case .int64(let values) = elements else {
            throw BackpropError(.format, "\(file): expected an int64 array of labels")
        }
        return values.map(Int.init)
    }

    /// The element count a shape holds, or nil when the product overflows or a size is negative.
    static func count(of shape: [Int]) -> Int? {
        var count = 1
        for size in shape {
            guard size >= 0 else { return nil }
            let product = count.multipliedReportingOverflow(by: size)
            if product.overflow { return nil }
            count = product.partialValue
        }
        return count
    }
}
