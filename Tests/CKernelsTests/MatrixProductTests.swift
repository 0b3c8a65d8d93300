import BackpropTestSupport
import CKernels
import Testing

/// The CPU's vector extensions, as cpuid and xgetbv report them.
@Suite struct CPUTests {
    @Test func theVectorLevelIsKnown() {
        #expect((0...2).contains(bp_cpu_vector_level()))
        #expect([8, 16].contains(bp_product_vector_width()))
    }
}

/// bp_matrix_product: our kernels' product with A and B as they are or transposed. Against the
/// plain-loop reference, and the same bits for 1, 2 and 3 threads and on the AVX2 and AVX-512
/// kernels.
@Suite struct MatrixProductTests {
    struct Case: CustomStringConvertible {
        let m: Int, n: Int, k: Int, transA: Bool, transB: Bool, accumulate: Bool
        var description: String {
            "m=\(m) n=\(n) k=\(k) transA=\(transA) transB=\(transB) accumulate=\(accumulate)"
        }
        /// A's rows and their length (its leading dimension is three more).
        var aShape: (rows: Int, cols: Int) { transA ? (k, m) : (m, k) }
        /// B's rows and their length (its leading dimension is two more).
        var bShape: (rows: Int, cols: Int) { transB ? (n, k) : (k, n) }
    }

    // Edges of the 6-, 8-, 16- and 32-wide blocks and strips, reductions over several blocks of steps
    // (up to 320, of unequal sizes), more than one group of 256 (and of 864) columns, fewer strips
    // than threads, k = 0; and rows 4 KB apart (1021 + 3, 1022 + 2 floats), which a transposed A or
    // its B copies.
    static let cases: [Case] = [
        (1, 1, 1), (5, 7, 3), (17, 33, 65), (49, 28, 512), (100, 90, 701), (13, 300, 270), (40, 20, 0),
        (1021, 1022, 40), (9, 1030, 300),
    ].flatMap { m, n, k in
        [false, true].flatMap { transA in
            [false, true].flatMap { transB in
                [false, true].map {
                    Case(m: m, n: n, k: k, transA: transA, transB: transB, accumulate: $0)
                }
            }
        }
    }

    /// A [m, k] and B with leading dimensions wider than needed (the columns past them are never
    /// read), and C's start [m, n] with one column more (never written).
    static func operands(_ c: Case) -> (a: [Float], b: [Float], start: [Float]) {
        var random = TestRandom(seed: UInt64(c.m * 131 + c.n * 17 + c.k))
        return (
            random.floats(c.aShape.rows * (c.aShape.cols + 3)),
            random.floats(c.bShape.rows * (c.bShape.cols + 2)),
            random.floats(c.m * (c.n + 1))
        )
    }

    func product(_ c: Case, threads: Int = 2, forcingAVX2: Bool = false) -> [Float] {
        let (a, b, start) = Self.operands(c)
        var out = start
        let missing = withThreads(threads) {
            withProductKernel(forcingAVX2: forcingAVX2) { _ in
                bp_matrix_product(
                    c.transA ? 1 : 0, c.transB ? 1 : 0, Int64(c.m), Int64(c.n), Int64(c.k), a,
                    Int64(c.aShape.cols + 3), b,
                    Int64(c.bShape.cols + 2), c.accumulate ? 1 : 0, &out, Int64(c.n + 1))
            }
        }
        #expect(missing == 0)
        return out
    }

    @Test("the product matches the plain-loop reference", arguments: cases)
    func matchesReference(_ c: Case) {
        let (a, b, start) = Self.operands(c)
        let out = product(c)
        var reference = start
        bp_matrix_product_ref(
            c.transA ? 1 : 0, c.transB ? 1 : 0, Int64(c.m), Int64(c.n), Int64(c.k), a,
            Int64(c.aShape.cols + 3), b,
            Int64(c.bShape.cols + 2), c.accumulate ? 1 : 0, &reference, Int64(c.n + 1))
        #expect(relativeError(out, reference) < 1e-5, "\(c)")
        for row in 0..<c.m { #expect(out[row * (c.n + 1) + c.n] == start[row * (c.n + 1) + c.n], "\(c)") }
    }

    @Test("the same bits for 1, 2 and 3 threads and with either kernel", arguments: cases)
    func bitsDoNotDependOnThreadsOrKernel(_ c: Case) {
        // Compared outside #expect: its description of two unequal arrays of a million floats
        // (their difference) would take longer than the whole suite.
        let one = bits(product(c, threads: 1))
        let two = bits(product(c, threads: 2)) == one, three = bits(product(c, threads: 3)) == one
        let avx2 = bits(product(c, threads: 2, forcingAVX2: true)) == one
        #expect(two, "2 threads: \(c)")
        #expect(three, "3 threads: \(c)")
        #expect(avx2, "AVX2: \(c)")
    }
}
