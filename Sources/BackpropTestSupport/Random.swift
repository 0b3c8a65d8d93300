import Backprop

/// The one seeded generator of tests and benchmarks: SplitMix64 (as Backprop's own draws), with
/// helpers for arrays of floats and tensors. The same seed gives the same values on every machine.
public struct TestRandom {
    private var generator: SplitMix64

    public init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    /// `count` floats uniform in [low, high): the top 24 bits of each draw, scaled.
    public mutating func floats(_ count: Int, _ low: Float = -1, _ high: Float = 1) -> [Float] {
        (0..<count).map { _ in low + (high - low) * Float(generator.next() >> 40) * 0x1p-24 }
    }

    /// A tensor of `shape` with values uniform in [low, high).
    public mutating func tensor(_ shape: [Int], _ low: Float = -1, _ high: Float = 1) -> Tensor {
        try! Tensor(shape: shape, scalars: floats(shape.reduce(1, *), low, high))
    }

    public mutating func next() -> UInt64 { generator.next() }
}

/// A tensor of `shape` with values uniform in [low, high), drawn from `seed`.
public func randomTensor(_ shape: [Int], seed: UInt64, _ low: Float = -1, _ high: Float = 1) -> Tensor {
    var random = TestRandom(seed: seed)
    return random.tensor(shape, low, high)
}

/// max|a − b| / max(max|b|, 1): the error of a float32 result against its reference.
public func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var error: Float = 0, scale: Float = 1
    for (x, y) in zip(a, b) where x != y {
        // A NaN on either side (or infinities that differ) is no small error: `max` would skip it.
        guard x.isFinite && y.isFinite else { return .infinity }
        error = max(error, abs(x - y))
        scale = max(scale, abs(y))
    }
    return error / scale
}

/// The bit patterns of floats, for bitwise comparisons that treat NaNs alike.
public func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }
