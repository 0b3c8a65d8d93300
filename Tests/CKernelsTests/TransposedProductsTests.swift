import BackpropTestSupport
import CKernels
import Testing

/// bp_transposed_products: several products Aᵀ · B_s with one A, in one pass over A where the sides
/// allow it. Each side's C must be the bits of its own bp_matrix_product, for 1, 2 and 3 threads and
/// on the AVX2 and AVX-512 kernels (whose widths, 16 and 32 columns, decide which sides go together).
@Suite struct TransposedProductsTests {
    struct Case: CustomStringConvertible {
        let m: Int, k: Int, widths: [Int], transB: Bool, accumulate: Bool
        var description: String { "m=\(m) k=\(k) widths=\(widths) transB=\(transB) accumulate=\(accumulate)" }
    }

    // Together (every width but one a multiple of 32, the ragged one first or last), together on
    // AVX2 only (16), apart (two ragged widths); one group of packed columns or two (800 columns of
    // 320 steps make a group: 512 + 700 spans a side's edge); reductions of one block of steps or
    // several of unequal sizes; three sides; one side.
    static let cases: [Case] = [
        (17, 300, [64, 37]), (17, 300, [37, 64]), (100, 701, [32, 300]), (40, 320, [512, 700]),
        (9, 65, [16, 16]), (33, 100, [48, 20]), (50, 333, [32, 64, 5]), (8, 1, [96]), (20, 40, [300]),
    ].flatMap { m, k, widths in
        [false, true].flatMap { transB in
            [false, true].map { Case(m: m, k: k, widths: widths, transB: transB, accumulate: $0) }
        }
    }

    /// A [k, m] (leading dimension m + 3), each side's B (leading dimension its width + 2, or k + 2
    /// transposed) and its C's start [m, width] (leading dimension width + 1).
    static func operands(_ c: Case) -> (a: [Float], bs: [[Float]], starts: [[Float]]) {
        var random = TestRandom(seed: UInt64(c.m * 131 + c.k * 7 + c.widths.reduce(0, +)))
        let bs = c.widths.map { random.floats(c.transB ? $0 * (c.k + 2) : c.k * ($0 + 2)) }
        return (random.floats(c.k * (c.m + 3)), bs, c.widths.map { random.floats(c.m * ($0 + 1)) })
    }

    /// Each side's C after one bp_transposed_products call, or (`apart`) after its own bp_matrix_product.
    func products(_ c: Case, apart: Bool = false, threads: Int = 2, forcingAVX2: Bool = false) -> [[Float]] {
        let (a, bs, starts) = Self.operands(c)
        let outs = starts.map { start in
            let out = UnsafeMutablePointer<Float>.allocate(capacity: start.count)
            out.initialize(from: start, count: start.count)
            return out
        }
        let inputs = bs.map { b in
            let copy = UnsafeMutablePointer<Float>.allocate(capacity: b.count)
            copy.initialize(from: b, count: b.count)
            return copy
        }
        defer { (outs + inputs).forEach { $0.deallocate() } }
        let sides = c.widths.indices.map { s in
            let width = c.widths[s]
            return bp_product_side(
                b: UnsafePointer(inputs[s]), ldb: Int64(c.transB ? c.k + 2 : width + 2), n: Int64(width),
                trans_b: c.transB ? 1 : 0, c: outs[s], ldc: Int64(width + 1))
        }
        let missing = withThreads(threads) {
            withProductKernel(forcingAVX2: forcingAVX2) { _ in
                if !apart {
                    return bp_transposed_products(
                        Int32(BP_FP32), Int64(c.m), Int64(c.k), a, Int64(c.m + 3), sides, Int32(sides.count),
                        c.accumulate ? 1 : 0)
                }
                return sides.reduce(Int64(0)) { missing, side in
                    missing
                        + bp_matrix_product(
                            1, side.trans_b, Int64(c.m), side.n, Int64(c.k), a, Int64(c.m + 3), side.b, side.ldb,
                            c.accumulate ? 1 : 0, side.c, side.ldc)
                }
            }
        }
        #expect(missing == 0)
        return zip(outs, starts).map { Array(UnsafeBufferPointer(start: $0, count: $1.count)) }
    }

    @Test("each side is the bits of its own product, for any thread count and kernel", arguments: cases)
    func eachSideIsItsOwnProduct(_ c: Case) {
        // Compared outside #expect, whose description of two unequal arrays would be their elements.
        let apart = products(c, apart: true, threads: 1).map(bits)
        for threads in 1...3 {
            let same = products(c, threads: threads).map(bits) == apart
            #expect(same, "\(threads) threads: \(c)")
        }
        let avx2 = products(c, forcingAVX2: true).map(bits) == apart
        let avx2Apart = products(c, apart: true, forcingAVX2: true).map(bits) == apart
        #expect(avx2, "AVX2: \(c)")
        #expect(avx2Apart, "AVX2 apart: \(c)")
    }

    @Test func matchesTheReference() {
        let c = Case(m: 40, k: 320, widths: [512, 700], transB: false, accumulate: true)
        let (a, bs, starts) = Self.operands(c)
        for (s, out) in products(c).enumerated() {
            var reference = starts[s]
            bp_matrix_product_ref(
                1, 0, Int64(c.m), Int64(c.widths[s]), Int64(c.k), a, Int64(c.m + 3), bs[s], Int64(c.widths[s] + 2),
                1, &reference, Int64(c.widths[s] + 1))
            #expect(relativeError(out, reference) < 1e-5, "side \(s)")
        }
    }
}
