import CKernels
import Testing

/// Deterministic pseudo-random floats in [low, high) for kernel tests.
struct Random {
    private var state: UInt64

    init(seed: UInt64) { state = seed &+ 0x1234_5678 }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    mutating func floats(_ count: Int, _ low: Float = -1, _ high: Float = 1) -> [Float] {
        (0..<count).map { _ in low + (high - low) * Float(next() >> 40) * 0x1p-24 }
    }
}

/// max|a − b| / max(max|b|, 1): the error of a float32 kernel against its reference.
func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var error: Float = 0, scale: Float = 1
    for (x, y) in zip(a, b) {
        error = max(error, abs(x - y))
        scale = max(scale, abs(y))
    }
    return error / scale
}

/// Runs `body` with the kernels' thread count set to `threads`, then restores it.
func withThreads<R>(_ threads: Int32, _ body: () -> R) -> R {
    let saved = bp_num_threads()
    bp_set_num_threads(threads)
    defer { bp_set_num_threads(saved) }
    return body()
}

/// The bit patterns of floats, for bitwise comparisons that treat NaNs alike.
func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

/// Calls `body` with mutable pointers to two arrays, or nils when `present` is false
/// (optional gradient outputs such as dgamma and dbeta).
func withOptionalPair<R>(_ present: Bool, _ a: inout [Float], _ b: inout [Float],
                         _ body: (UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?) -> R) -> R {
    guard present else { return body(nil, nil) }
    return a.withUnsafeMutableBufferPointer { pa in b.withUnsafeMutableBufferPointer { pb in body(pa.baseAddress, pb.baseAddress) } }
}

/// Runs `run` with 1 thread and with each of `others`, and expects the same bits in every output.
func expectBitIdentical(threads others: [Int32] = [2, 3], sourceLocation: SourceLocation = #_sourceLocation,
                        _ run: () -> [[UInt32]]) {
    let one = withThreads(1, run)
    for threads in others {
        let other = withThreads(threads, run)
        for index in one.indices {
            // The first differing element, not the arrays: a diff of large arrays takes minutes.
            let difference = one[index].indices.first { one[index][$0] != other[index][$0] }
            #expect(difference == nil, "output \(index) differs at \(difference ?? -1) with \(threads) threads",
                    sourceLocation: sourceLocation)
        }
    }
}
