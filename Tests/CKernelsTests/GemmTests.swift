import BackpropTestSupport
import CKernels
import Testing

@Suite struct GemmTests {
    struct Case: CustomStringConvertible {
        let transA: Bool, transB: Bool, m: Int, n: Int, k: Int, beta: Float
        var description: String { "transA=\(transA) transB=\(transB) m=\(m) n=\(n) k=\(k) beta=\(beta)" }
    }

    static let cases: [Case] = [
        (1, 1, 1), (1, 7, 3), (5, 1, 9), (3, 4, 1), (17, 33, 65), (64, 31, 128), (130, 70, 9),
        (100, 90, 500),  // a short side with a long reduction: two tiles of 64 and 36 rows
    ].flatMap { m, n, k in
        [false, true].flatMap { ta in
            [false, true].flatMap { tb in
                [Float(0), 1].map { Case(transA: ta, transB: tb, m: m, n: n, k: k, beta: $0) }
            }
        }
    }

    @Test("sgemm matches the plain-loop reference", arguments: cases)
    func matchesReference(_ c: Case) {
        var random = TestRandom(seed: UInt64(c.m * 131 + c.n * 17 + c.k))
        // Leading dimensions one wider than needed, so strided access is exercised too.
        let (rowsA, colsA) = c.transA ? (c.k, c.m) : (c.m, c.k)
        let (rowsB, colsB) = c.transB ? (c.n, c.k) : (c.k, c.n)
        let a = random.floats(rowsA * (colsA + 1)), b = random.floats(rowsB * (colsB + 1))
        let c0 = random.floats(c.m * (c.n + 1))
        var fast = c0, reference = c0
        bp_sgemm(
            c.transA ? 1 : 0, c.transB ? 1 : 0, Int64(c.m), Int64(c.n), Int64(c.k), 0.5,
            a, Int64(colsA + 1), b, Int64(colsB + 1), c.beta, &fast, Int64(c.n + 1))
        bp_sgemm_ref(
            c.transA ? 1 : 0, c.transB ? 1 : 0, Int64(c.m), Int64(c.n), Int64(c.k), 0.5,
            a, Int64(colsA + 1), b, Int64(colsB + 1), c.beta, &reference, Int64(c.n + 1))
        #expect(relativeError(fast, reference) < 1e-5, "\(c)")
        // The padding column of C is never written.
        for row in 0..<c.m { #expect(fast[row * (c.n + 1) + c.n] == c0[row * (c.n + 1) + c.n], "\(c)") }
    }
}

@Suite struct BLASCoreCheckTests {
    @Test func fallbackKernelsAreDetected() {
        func better(_ core: String, _ level: Int32) -> String? {
            bp_blas_better_coretype(core, level).map { String(cString: $0) }
        }
        #expect(better("Prescott", 2) == "SkylakeX")
        #expect(better("Haswell", 2) == "SkylakeX")
        #expect(better("SkylakeX", 2) == nil)
        #expect(better("Prescott", 1) == "Haswell")
        #expect(better("Zen", 1) == nil)
        #expect(better("Haswell", 1) == nil)
        #expect(better("Prescott", 0) == nil, "a CPU without AVX2 has nothing better")
    }

    @Test func theLoadedCoreIsKnown() {
        let core = String(cString: bp_blas_corename())
        #expect(!core.isEmpty)
        #expect((0...2).contains(bp_cpu_vector_level()))
    }
}
