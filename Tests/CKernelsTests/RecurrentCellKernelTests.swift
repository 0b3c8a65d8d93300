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

    /// h_t and ∂J/∂x of GRU and LSTM batch rows: each row's are its own (its products and cells read
    /// no other row's), so a row in a batch of 88 must have the bits it has alone. At 2 and 3 threads
    /// the batch's rows go to the threads in runs of 16 from rows 0 and 40 (the second thread's runs
    /// straddle the groups of 16 rows in which the forward saves what the backward reads).
    @Test(arguments: [BP_LSTM, BP_GRU])
    func aRowInABatchIsTheRowAlone(kind: bp_rnn_kind) {
        let (n, t, input, hidden) = (88, 4, 5, 32)
        let gates = Int(bp_rnn_gates(Int32(kind.rawValue)))
        var random = TestRandom(seed: 41)
        let x = random.floats(n * t * input, -2, 2), dy = random.floats(n * t * hidden)
        let wih = random.floats(gates * hidden * input), whh = random.floats(gates * hidden * hidden)
        let (bih, bhh) = (random.floats(gates * hidden), random.floats(gates * hidden))
        /// y and dx of rows [first, first + rows).
        func pass(_ first: Int, _ rows: Int, threads: Int) -> (y: [UInt32], dx: [UInt32]) {
            var p = bp_rnn_params(
                n: Int64(rows), t: Int64(t), input: Int64(input), hidden: Int64(hidden), y_stride: Int64(hidden),
                y_offset: 0, kind: Int32(kind.rawValue), reverse: 0, precision: Int32(BP_FP32))
            let xs = Array(x[first * t * input..<(first + rows) * t * input])
            let dys = Array(dy[first * t * hidden..<(first + rows) * t * hidden])
            var y = [Float](repeating: 0, count: rows * t * hidden), dx = [Float](repeating: 0, count: xs.count)
            var saved = [Float](repeating: 0, count: rows * t * Int(bp_rnn_saved_per_row(&p)))
            var (dwih, dwhh) = ([Float](repeating: 0, count: wih.count), [Float](repeating: 0, count: whh.count))
            let missing = withThreads(threads) {
                bp_rnn_forward(&y, nil, nil, &saved, xs, nil, nil, wih, whh, bih, bhh, &p)
                    + bp_rnn_backward(
                        &dx, nil, nil, &dwih, &dwhh, nil, nil, dys, nil, nil, saved, y, xs, nil, nil, wih, whh, 0, &p)
            }
            #expect(missing == 0)
            return (bits(y), bits(dx))
        }
        for threads in [2, 3] {
            let batch = pass(0, n, threads: threads)
            for row in [0, 15, 39, 40, 55, 56, 71, 87] {
                let alone = pass(row, 1, threads: 1)
                let y = Array(batch.y[row * t * hidden..<(row + 1) * t * hidden]) == alone.y
                let dx = Array(batch.dx[row * t * input..<(row + 1) * t * input]) == alone.dx
                #expect(y && dx, "row \(row), \(threads) threads")
            }
        }
    }
}
