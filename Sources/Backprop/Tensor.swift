import CKernels
import Foundation

/// A dense float32 tensor: a shape and its scalars, contiguous in row-major order
/// (NCHW for images). A value type: copies share storage until one of them is written. Its storage
/// is counted while alive (`TensorMemory`).
public struct Tensor: Equatable, Sendable, CustomStringConvertible {
    /// The size of each axis, outermost first.
    public private(set) var shape: [Int]
    private var storage: TensorStorage

    /// The elements in row-major order; `scalars.count` is the product of `shape`.
    public var scalars: [Float] { storage.scalars }

    public static func == (a: Tensor, b: Tensor) -> Bool { a.shape == b.shape && a.scalars == b.scalars }

    /// A tensor with the given shape and scalars.
    /// Throws when a size is negative or the count of scalars does not match the shape.
    public init(shape: [Int], scalars: [Float]) throws {
        try Tensor.validate(shape)
        let count = shape.reduce(1, *)
        guard scalars.count == count else {
            throw BackpropError(
                .shapeMismatch,
                "Tensor: \(scalars.count) scalars for shape \(describe(shape)), expected \(count)")
        }
        self.shape = shape
        storage = TensorStorage(scalars)
    }

    /// A tensor of `shape` filled with `value`.
    public init(shape: [Int], repeating value: Float = 0) throws {
        try Tensor.validate(shape)
        self.init(unchecked: shape, scalars: [Float](repeating: value, count: shape.reduce(1, *)))
    }

    /// A rank-1 tensor holding `scalars`.
    public init(_ scalars: [Float]) {
        self.init(unchecked: [scalars.count], scalars: scalars)
    }

    /// For shapes the library has already validated.
    package init(unchecked shape: [Int], scalars: [Float]) {
        self.shape = shape
        storage = TensorStorage(scalars)
    }

    static func validate(_ shape: [Int]) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw BackpropError(.invalidArgument, "Tensor: shape \(describe(shape)) has a negative size")
        }
        var count = 1
        for size in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: size)
            guard !overflow else {
                throw BackpropError(
                    .invalidArgument, "Tensor: shape \(describe(shape)) has more elements than Int can count")
            }
            count = product
        }
        guard count <= maxElements else {
            throw BackpropError(
                .outOfMemory,
                "Tensor: shape \(describe(shape)) has \(count) elements, more than the limit of \(maxElements) "
                    + "(raise it with Tensor.maxElements or the environment's BACKPROP_MAX_TENSOR_ELEMENTS)")
        }
    }

    /// The most elements a tensor the library creates may hold: 2^32 (16 GB of floats) unless
    /// BACKPROP_MAX_TENSOR_ELEMENTS says otherwise. A larger shape is refused with an error rather
    /// than an allocation that fails and stops the process.
    nonisolated(unsafe) public static var maxElements: Int = {
        guard let text = getenv("BACKPROP_MAX_TENSOR_ELEMENTS"), let value = Int(String(cString: text)), value > 0
        else { return 1 << 32 }
        return value
    }()

    public var count: Int { scalars.count }
    public var rank: Int { shape.count }

    public subscript(index: Int) -> Float {
        get { scalars[index] }
        set {
            makeUnique()
            storage.scalars[index] = newValue
        }
    }

    /// The same scalars under another shape of the same count.
    public func reshaped(to newShape: [Int]) throws -> Tensor {
        try Tensor(shape: newShape, scalars: scalars)
    }

    public var description: String {
        let head = scalars.prefix(8).map { "\($0)" }.joined(separator: ", ")
        return "Tensor(\(describe(shape)): [\(head)\(count > 8 ? ", ..." : "")])"
    }
}

// MARK: - Construction from C kernels

extension Tensor {
    /// A tensor of a validated `shape` whose every scalar `fill` writes.
    static func filled(_ shape: [Int], by fill: (UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        Tensor(unchecked: shape, scalars: uninitializedArray(shape.reduce(1, *), fill))
    }

    /// Calls `body` with a pointer to the scalars (never nil, even for an empty tensor).
    package func withPointer<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        try scalars.withUnsafeBufferPointer { buffer in
            try withExtendedLifetime(buffer) {
                try body(buffer.baseAddress ?? UnsafePointer(Tensor.emptyStorage))
            }
        }
    }

    /// Whether no scalar is infinite or NaN (one vectorised pass).
    public var isFinite: Bool { withPointer { bp_all_finite($0, Int64(count)) != 0 } }

    /// Calls `body` with a mutable pointer to the scalars.
    mutating func withMutablePointer<R>(_ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        makeUnique()
        return try storage.scalars.withUnsafeMutableBufferPointer { buffer in
            try body(buffer.baseAddress ?? Tensor.emptyStorage)
        }
    }

    /// Gives this tensor storage of its own before a write.
    private mutating func makeUnique() {
        if !isKnownUniquelyReferenced(&storage) { storage = TensorStorage(storage.scalars) }
    }

    /// A valid address for kernels called with n = 0, which never dereference it.
    nonisolated(unsafe) private static let emptyStorage = UnsafeMutablePointer<Float>.allocate(capacity: 1)
}

/// An array of `count` elements that `fill` (a kernel) writes every one of, not initialised before.
func uninitializedArray<Element>(_ count: Int, _ fill: (UnsafeMutablePointer<Element>) -> Void) -> [Element] {
    return [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
        if let base = buffer.baseAddress { fill(base) }
        initialized = count
    }
}

// MARK: - Random initialisation

extension Tensor {
    /// Scalars drawn uniformly from [low, high).
    public static func uniform<G: RandomNumberGenerator>(
        shape: [Int], low: Float, high: Float,
        using generator: inout G
    ) throws -> Tensor {
        try validate(shape)
        let count = shape.reduce(1, *)
        return Tensor(
            unchecked: shape,
            scalars: (0..<count).map { _ in
                Float.random(in: low..<high, using: &generator)
            })
    }

    /// Scalars drawn from a normal distribution (Box–Muller).
    public static func normal<G: RandomNumberGenerator>(
        shape: [Int], mean: Float = 0, std: Float = 1,
        using generator: inout G
    ) throws -> Tensor {
        try validate(shape)
        let count = shape.reduce(1, *)
        return Tensor(
            unchecked: shape,
            scalars: (0..<count).map { _ in
                let u1 = Double.random(in: Double.ulpOfOne..<1, using: &generator)
                let u2 = Double.random(in: 0..<1, using: &generator)
                return mean + std * Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
            })
    }
}

/// SplitMix64: a small, fast, seedable generator, so every random draw in Backprop
/// (initialisation, shuffling, dropout seeds) is reproducible from one seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// Where the generator stands: `SplitMix64(seed: g.state)` continues as g would.
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
