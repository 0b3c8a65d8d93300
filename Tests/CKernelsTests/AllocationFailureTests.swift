import BackpropTestSupport
import CKernels
import Testing

/// Every kernel that allocates reports a failed allocation instead of crashing: with the calling
/// thread's 1st, 2nd, … allocation made to fail (bp_fail_allocation), each run returns the bytes it
/// could not get, until the count passes the kernel's allocations and it succeeds. The calling
/// thread also runs its share of each parallel region, so its scratch allocations are reached too.
@Suite struct AllocationFailureTests {
    static func expectReportsEveryFailure(
        _ label: String, sourceLocation: SourceLocation = #_sourceLocation,
        _ kernel: () -> Int64
    ) {
        var failures = 0
        for count in 1...64 {
            bp_fail_allocation(Int64(count))
            let missing = kernel()
            bp_fail_allocation(0)
            if missing == 0 { break }
            #expect(missing > 0, "\(label): allocation \(count) reported \(missing)", sourceLocation: sourceLocation)
            failures += 1
        }
        #expect(failures > 0, "\(label): no allocation failed", sourceLocation: sourceLocation)
        #expect(kernel() == 0, "\(label): fails without an injected failure", sourceLocation: sourceLocation)
    }

    @Test(arguments: [1, 3])  // groups 3 with 3 channels: the depthwise path
    func convolutions(groups: Int) {
        var p = bp_conv2d_params(
            n: 2, c: 3, h: 9, w: 8, k: 3, out_h: 9, out_w: 8, r: 3, s: 3, stride_h: 1, stride_w: 1,
            pad_h: 1, pad_w: 1, dilation_h: 1, dilation_w: 1, groups: Int64(groups))
        var random = TestRandom(seed: 1)
        let x = random.floats(2 * 3 * 9 * 8), w = random.floats(3 * 3 / groups * 9), dy = random.floats(2 * 3 * 9 * 8)
        var out = [Float](repeating: 0, count: x.count), dw = [Float](repeating: 0, count: w.count),
            db = [Float](repeating: 0, count: 3)
        Self.expectReportsEveryFailure("conv2d forward") { bp_conv2d_forward(&out, x, w, nil, &p) }
        Self.expectReportsEveryFailure("conv2d backward-data") { bp_conv2d_backward_data(&out, dy, w, nil, &p) }
        Self.expectReportsEveryFailure("conv2d backward-weights") { bp_conv2d_backward_weights(&dw, &db, dy, x, &p) }
        Self.expectReportsEveryFailure("conv2d forward reference") { bp_conv2d_forward_ref(&out, x, w, &p) }
    }

    @Test func normalization() {
        let (n, c, hw) = (3, 4, 10)
        var random = TestRandom(seed: 2)
        let x = random.floats(n * c * hw), dy = random.floats(n * c * hw)
        var y = [Float](repeating: 0, count: x.count), mean = [Float](repeating: 0, count: 2 * n * c)
        var rstd = [Float](repeating: 0, count: n * c), dg = [Float](repeating: 0, count: c * hw), db = dg
        Self.expectReportsEveryFailure("batchnorm forward") {
            bp_batchnorm_forward_train(
                &y, &mean, &rstd, nil, nil, x, nil, nil, Int64(n), Int64(c), Int64(hw), 1e-5, 0.1, 0)
        }
        Self.expectReportsEveryFailure("batchnorm backward") {
            bp_batchnorm_backward(&y, nil, nil, dy, x, mean, rstd, nil, nil, Int64(n), Int64(c), Int64(hw), 1, 0)
        }
        bp_layernorm_forward(&y, &mean, &rstd, x, nil, nil, Int64(n * c), Int64(hw), 1e-5)
        Self.expectReportsEveryFailure("layernorm backward") {
            bp_layernorm_backward(&y, &dg, &db, dy, x, mean, rstd, nil, Int64(n * c), Int64(hw))
        }
    }

    /// One case of each pooling strategy: fixed windows (max), the stride-1 average's image,
    /// adaptive windows, tiles, and the argmax positions.
    @Test(arguments: [(3, 2, 1, 0), (3, 1, 1, 1), (2, 2, 0, 0)])
    func pooling(kernel: Int, stride: Int, pad: Int, adaptive: Int) {
        let (h, w) = (9, 8)
        let outH = adaptive == 1 ? 4 : (h + 2 * pad - kernel) / stride + 1,
            outW = adaptive == 1 ? 3 : (w + 2 * pad - kernel) / stride + 1
        var p = bp_pool2d_params(
            n: 2, c: 3, h: Int64(h), w: Int64(w), out_h: Int64(outH), out_w: Int64(outW),
            kernel_h: Int64(kernel), kernel_w: Int64(kernel), stride_h: Int64(stride),
            stride_w: Int64(stride), pad_h: Int64(pad), pad_w: Int64(pad), dilation_h: 1, dilation_w: 1,
            adaptive: Int32(adaptive), count_include_pad: 1, divisor_override: 0)
        var random = TestRandom(seed: 3)
        let x = random.floats(6 * h * w), dy = random.floats(6 * outH * outW)
        var y = [Float](repeating: 0, count: dy.count), dx = x, index = [UInt8](repeating: 0, count: dy.count)
        var indices = [Int64](repeating: 0, count: dy.count)
        Self.expectReportsEveryFailure("max pooling forward") { bp_maxpool2d_forward(&y, &index, nil, x, &p) }
        Self.expectReportsEveryFailure("max pooling backward") { bp_maxpool2d_backward(&dx, dy, index, nil, &p) }
        Self.expectReportsEveryFailure("argmax positions") { bp_maxpool2d_plane_indices(&indices, index, nil, &p) }
        Self.expectReportsEveryFailure("average pooling forward") { bp_avgpool2d_forward(&y, x, &p) }
        Self.expectReportsEveryFailure("average pooling backward") { bp_avgpool2d_backward(&dx, dy, &p) }
    }

    @Test(arguments: [BP_RNN_TANH, BP_LSTM, BP_GRU], [BP_FP32, BP_BF16])
    func recurrent(kind: bp_rnn_kind, precision: Int) {
        let (n, t, input, hidden) = (3, 4, 5, 6)
        var p = bp_rnn_params(
            n: Int64(n), t: Int64(t), input: Int64(input), hidden: Int64(hidden), y_stride: Int64(hidden), y_offset: 0,
            kind: Int32(kind.rawValue), reverse: 0, precision: Int32(precision))
        let gates = Int(bp_rnn_gates(Int32(kind.rawValue)))
        var random = TestRandom(seed: 4)
        let x = random.floats(n * t * input), wih = random.floats(gates * hidden * input)
        let whh = random.floats(gates * hidden * hidden), dy = random.floats(n * t * hidden)
        var y = [Float](repeating: 0, count: n * t * hidden),
            saved = [Float](repeating: 0, count: n * t * Int(bp_rnn_saved_per_row(&p)))
        var dx = x, dwih = wih, dwhh = whh
        Self.expectReportsEveryFailure("recurrent forward") {
            bp_rnn_forward(&y, nil, nil, &saved, x, nil, nil, wih, whh, nil, nil, &p)
        }
        Self.expectReportsEveryFailure("recurrent backward") {
            bp_rnn_backward(&dx, nil, nil, &dwih, &dwhh, nil, nil, dy, nil, nil, saved, y, x, nil, nil, wih, whh, 0, &p)
        }
    }

    @Test func embedding() {
        let indices: [Int64] = [3, 1, 3, 0]
        var dweight = [Float](repeating: 0, count: 5 * 2)
        let dy = [Float](repeating: 1, count: 4 * 2)
        Self.expectReportsEveryFailure("embedding backward") {
            bp_embedding_backward(&dweight, dy, indices, 4, 2, 5, -1)
        }
    }
}
