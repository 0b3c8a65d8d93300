import BackpropTestSupport
import CKernels
import Foundation
import Testing

/// bfloat16: the rounding of every float32 bit pattern, and the product on the instruction path
/// and the emulation path against the plain-loop reference, bit for bit.
@Suite struct BFloat16KernelTests {
    /// All 2^32 patterns, in 16 parallel slices; PyTorch's `.to(torch.bfloat16)` gave the
    /// reference's results for every one of them (checked once beside torch 2.15 on AMD Zen 4).
    @Test func everyFloatRoundsAsTheReferenceDoes() async {
        let slices = 16, size = (1 << 32) / slices
        let mismatches = await withTaskGroup(of: Int64.self) { group in
            for slice in 0..<slices {
                group.addTask { bp_bf16_first_rounding_mismatch(UInt64(slice * size), Int64(size)) }
            }
            return await group.reduce(into: [Int64]()) { $0.append($1) }
        }
        #expect(mismatches.allSatisfy { $0 == -1 }, "first mismatches: \(mismatches.filter { $0 >= 0 })")
    }

    @Test func roundingFollowsTheRules() {
        let cases: [(Float, UInt16)] = [
            (1, 0x3f80), (-2, 0xc000), (.infinity, 0x7f80), (-.infinity, 0xff80), (.nan, 0xffff),
            (Float(bitPattern: 0x3f80_8000), 0x3f80),  // a tie rounds to the even neighbour (down)
            (Float(bitPattern: 0x3f81_8000), 0x3f82),  // a tie rounds to the even neighbour (up)
            (Float(bitPattern: 0x3f80_8001), 0x3f81),  // past the tie: up
            (Float(bitPattern: 0x7f7f_ffff), 0x7f80),  // the largest float rounds to infinity
            (Float(bitPattern: 0x0000_8000), 0x0000),  // a denormal tie rounds to even (zero)
            (Float(bitPattern: 0x8001_8000), 0x8002),  // a negative denormal rounds like any value
        ]
        var out = [UInt16](repeating: 0, count: cases.count)
        bp_bf16_from_float(&out, cases.map(\.0), Int64(cases.count))
        #expect(out == cases.map(\.1))
        var back = [Float](repeating: 0, count: 3)
        bp_bf16_to_float(&back, [0x3f80, 0xc049, 0x7f80], 3)
        #expect(back == [1, -3.140625, .infinity])
    }

    struct Case: CustomStringConvertible {
        let transA: Bool, transB: Bool, m: Int, n: Int, k: Int, accumulate: Bool
        var description: String { "transA=\(transA) transB=\(transB) m=\(m) n=\(n) k=\(k) accumulate=\(accumulate)" }
    }

    static let cases: [Case] = [(1, 1, 1), (13, 33, 7), (12, 32, 8), (25, 70, 65), (3, 5, 130)].flatMap { m, n, k in
        [false, true].flatMap { ta in
            [false, true].flatMap { tb in
                [false, true].map { Case(transA: ta, transB: tb, m: m, n: n, k: k, accumulate: $0) }
            }
        }
    }

    /// Values of every kind the arithmetic treats apart: ordinary, denormal as bfloat16, huge
    /// (their products overflow float32), tiny (their products underflow), zeros of both signs.
    static func operand(_ count: Int, seed: UInt64, special: Bool) -> [Float] {
        var random = TestRandom(seed: seed)
        let base = random.floats(count)
        guard special else { return base }
        return base.enumerated().map { i, x in
            switch i % 7 {
            case 1: x * 0x1p-128
            case 3: x * 0x1p100
            case 5: x * 0x1p-70
            case 6: i % 2 == 0 ? 0 : -0.0
            default: x
            }
        }
    }

    static func product(
        _ c: Case, special: Bool, _ run: ([Float], Int64, [Float], Int64, inout [Float]) -> Void
    ) -> [Float] {
        let (rowsA, colsA) = c.transA ? (c.k, c.m) : (c.m, c.k)
        let (rowsB, colsB) = c.transB ? (c.n, c.k) : (c.k, c.n)
        let a = operand(rowsA * (colsA + 1), seed: UInt64(c.m * 31 + c.k), special: special)
        let b = operand(rowsB * (colsB + 1), seed: UInt64(c.n * 17 + c.k), special: special)
        var out = operand(c.m * (c.n + 1), seed: 5, special: special)
        run(a, Int64(colsA + 1), b, Int64(colsB + 1), &out)
        return out
    }

    @Test("the instruction, the emulation and the reference give the same bits", arguments: cases)
    func pathsAgree(_ c: Case) {
        for special in [false, true] {
            let (ta, tb, m, n, k) = (
                Int32(c.transA ? 1 : 0), Int32(c.transB ? 1 : 0), Int64(c.m), Int64(c.n), Int64(c.k)
            )
            let accumulate: Int32 = c.accumulate ? 1 : 0
            let reference = Self.product(c, special: special) { a, lda, b, ldb, out in
                bp_bf16_gemm_ref(ta, tb, m, n, k, a, lda, b, ldb, &out, n + 1, accumulate)
            }
            for emulate: Int32 in [0, 1] {
                let fast = Self.product(c, special: special) { a, lda, b, ldb, out in
                    #expect(bp_bf16_gemm(ta, tb, m, n, k, a, lda, b, ldb, &out, n + 1, accumulate, emulate) == 0)
                }
                #expect(bits(fast) == bits(reference), "\(c) special=\(special) emulate=\(emulate)")
            }
        }
    }

    /// The instruction reads a denormal accumulator as zero: 2^-127 + 2^-63 · 2^-63 (the pair's odd
    /// element, added first) gives 2^-126,
    /// not 1.5 · 2^-126, whichever path runs.
    @Test func aDenormalStartingValueCountsAsZero() {
        for emulate: Int32 in [0, 1] {
            var c: [Float] = [0x1p-127, 1]
            #expect(bp_bf16_gemm(0, 0, 1, 2, 2, [0, 0x1p-63], 2, [0, 0, 0x1p-63, 1], 2, &c, 2, 1, emulate) == 0)
            #expect(bits(c) == bits([0x1p-126, 1 + 0x1p-63]), "emulate=\(emulate)")
        }
    }

    @Test func theProductDoesNotDependOnTheThreadCount() {
        let c = Case(transA: false, transB: true, m: 100, n: 90, k: 300, accumulate: true)
        let results = [1, 2, 3].map { threads in
            withThreads(threads) {
                Self.product(c, special: false) { a, lda, b, ldb, out in
                    _ = bp_bf16_gemm(0, 1, 100, 90, 300, a, lda, b, ldb, &out, 91, 1, 0)
                }
            }
        }
        #expect(bits(results[0]) == bits(results[1]) && bits(results[0]) == bits(results[2]))
    }

    @Test func theMachineSaysWhetherItHasTheInstruction() {
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        #expect((bp_bf16_has_instruction() == 1) == flags.contains("avx512_bf16"))
    }
}
