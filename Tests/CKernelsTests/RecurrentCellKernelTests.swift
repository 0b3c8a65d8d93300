import BackpropTestSupport
import CKernels
import Testing

/// The LSTM's forward cells run on AVX-512 where the product kernel is the AVX-512 one
/// (recurrent_cells_avx512.c) and as recurrent.c's loops otherwise: the same bits, including
/// saturated gates (pre-activations past ±88, where the exponential is clamped), a NaN, and rows
/// past the last group of four.
@Suite struct RecurrentCellKernelTests {
    /// y, h_n, c_n and saved of an LSTM's forward, x and the states in wide ranges; batch row 12's
    /// first input is NaN.
    func forward(hidden: Int, threads: Int, forcingAVX2: Bool) -> [[UInt32]] {
        let (n, t, input) = (13, 5, 7)
        var p = bp_rnn_params(
            n: Int64(n), t: Int64(t), input: Int64(input), hidden: Int64(hidden), y_stride: Int64(hidden), y_offset: 0,
            kind: Int32(BP_LSTM.rawValue), reverse: 0, precision: Int32(BP_FP32))
        var random = TestRandom(seed: UInt64(hidden))
        var x = random.floats(n * t * input, -30, 30)
        x[12 * t * input] = .nan
        let (h0, c0) = (random.floats(n * hidden, -1, 1), random.floats(n * hidden, -100, 100))
        let wih = random.floats(4 * hidden * input, -3, 3), whh = random.floats(4 * hidden * hidden, -3, 3)
        let (bih, bhh) = (random.floats(4 * hidden, -5, 5), random.floats(4 * hidden, -5, 5))
        var y = [Float](repeating: 0, count: n * t * hidden)
        var (hn, cn) = ([Float](repeating: 0, count: n * hidden), [Float](repeating: 0, count: n * hidden))
        var saved = [Float](repeating: 0, count: n * t * Int(bp_rnn_saved_per_row(&p)))
        let missing = withThreads(threads) {
            withProductKernel(forcingAVX2: forcingAVX2) { _ in
                bp_rnn_forward(&y, &hn, &cn, &saved, x, h0, c0, wih, whh, bih, bhh, &p)
            }
        }
        #expect(missing == 0)
        return [bits(y), bits(hn), bits(cn), bits(saved)]
    }

    // 48 units: three full blocks; 40: two and a partial one (recurrent.c's loops either way).
    @Test(arguments: [48, 40])
    func avx512CellsGiveTheLoopsBits(hidden: Int) {
        let loops = forward(hidden: hidden, threads: 1, forcingAVX2: true)
        // Saturated and NaN lanes are there to be compared.
        #expect(loops[0].contains { Float(bitPattern: $0).isNaN })
        #expect(loops[3].contains { Float(bitPattern: $0) == 1 } && loops[3].contains { Float(bitPattern: $0) == 0 })
        for threads in [1, 2] {
            let cells = forward(hidden: hidden, threads: threads, forcingAVX2: false)
            let same = cells == loops
            #expect(same, "\(threads) threads")
        }
    }
}
