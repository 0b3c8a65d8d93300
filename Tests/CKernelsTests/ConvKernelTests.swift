import BackpropTestSupport
import CKernels
import Testing

@Suite struct ConvKernelTests {
    /// A labelled convolution shape; out_h and out_w follow from symmetric padding.
    struct Shape: CustomStringConvertible, Sendable {
        let label: String
        let n, c, h, w, k, r, s: Int
        var stride = (1, 1), pad = (0, 0), dilation = (1, 1), groups = 1

        var params: bp_conv2d_params {
            let outH = (h + 2 * pad.0 - dilation.0 * (r - 1) - 1) / stride.0 + 1
            let outW = (w + 2 * pad.1 - dilation.1 * (s - 1) - 1) / stride.1 + 1
            return bp_conv2d_params(
                n: Int64(n), c: Int64(c), h: Int64(h), w: Int64(w), k: Int64(k),
                out_h: Int64(outH), out_w: Int64(outW), r: Int64(r), s: Int64(s),
                stride_h: Int64(stride.0), stride_w: Int64(stride.1), pad_h: Int64(pad.0),
                pad_w: Int64(pad.1), dilation_h: Int64(dilation.0), dilation_w: Int64(dilation.1),
                groups: Int64(groups))
        }

        var description: String {
            "\(label): n=\(n) c=\(c) \(h)x\(w) k=\(k) kernel \(r)x\(s) stride \(stride) pad \(pad) dilation \(dilation) groups \(groups)"
        }
    }

    static let shapes: [Shape] = [
        Shape(label: "basic 3x3 pad 1", n: 2, c: 3, h: 7, w: 6, k: 4, r: 3, s: 3, pad: (1, 1)),
        Shape(label: "stride 2, size not dividing", n: 2, c: 2, h: 9, w: 8, k: 3, r: 3, s: 3, stride: (2, 2)),
        Shape(label: "stride 3 with padding", n: 1, c: 2, h: 10, w: 11, k: 2, r: 3, s: 2, stride: (3, 3), pad: (1, 1)),
        Shape(
            label: "asymmetric kernel, stride and dilation", n: 1, c: 3, h: 8, w: 7, k: 5, r: 3, s: 2,
            stride: (2, 1), pad: (1, 0), dilation: (1, 2)),
        Shape(label: "dilation 2", n: 2, c: 2, h: 9, w: 9, k: 3, r: 3, s: 3, pad: (2, 2), dilation: (2, 2)),
        Shape(label: "groups 2", n: 2, c: 4, h: 6, w: 6, k: 6, r: 3, s: 3, pad: (1, 1), groups: 2),
        Shape(label: "depthwise", n: 3, c: 5, h: 6, w: 5, k: 5, r: 3, s: 3, pad: (1, 1), groups: 5),
        Shape(
            label: "depthwise, stride 2, dilation 2, wide rows", n: 2, c: 3, h: 11, w: 29, k: 3, r: 3, s: 3,
            stride: (2, 2), pad: (2, 1), dilation: (2, 2), groups: 3),
        Shape(label: "depthwise multiplier 2", n: 1, c: 3, h: 5, w: 5, k: 6, r: 3, s: 3, pad: (1, 1), groups: 3),
        Shape(label: "C = 1", n: 2, c: 1, h: 8, w: 8, k: 4, r: 5, s: 5, pad: (2, 2)),
        // Few taps (at most 25): the direct weight gradient on AVX2 too. 437 and 391 pixels: a
        // chunk boundary inside a row; 20 and 33 channels: a short last block of 16.
        Shape(label: "few taps, 5x5, two pixel chunks", n: 5, c: 1, h: 23, w: 19, k: 20, r: 5, s: 5, pad: (2, 1)),
        Shape(label: "few taps, 3x3, two input rows a pass", n: 2, c: 2, h: 17, w: 23, k: 33, r: 3, s: 3, pad: (1, 1)),
        Shape(label: "K = 1", n: 2, c: 3, h: 5, w: 6, k: 1, r: 3, s: 3),
        Shape(label: "batch 1, 1x1 pointwise", n: 1, c: 5, h: 4, w: 4, k: 2, r: 1, s: 1),
        // 63 pixels: the forward reads x's first 32 (AVX-512) or 48 (AVX2) columns in place and
        // packs the rest; 330 channels: two reduction blocks.
        Shape(label: "1x1, pixels read in place and packed", n: 3, c: 330, h: 7, w: 9, k: 21, r: 1, s: 1),
        Shape(label: "1x1 with stride 2", n: 2, c: 3, h: 5, w: 5, k: 2, r: 1, s: 1, stride: (2, 2)),
        Shape(label: "kernel as large as the padded input", n: 2, c: 2, h: 3, w: 4, k: 3, r: 5, s: 6, pad: (1, 1)),
        Shape(
            label: "padding larger than the kernel reach", n: 1, c: 2, h: 3, w: 3, k: 2, r: 2, s: 2, stride: (2, 2),
            pad: (3, 3)),
        // The backward-data's column gradient over two reduction blocks of 165 channels, its 56
        // pixels packed call by call (dy's 330 rows crowd the first-level cache), the last short.
        Shape(
            label: "column gradient, two channel blocks, a short last pixel block", n: 2, c: 3, h: 20, w: 22, k: 330,
            r: 3, s: 3, stride: (3, 3), pad: (1, 1)),
        // dy's planes of 16 × 24 pixels, 1536 bytes apart: their 40 rows crowd 8 of the first-level
        // cache's sets, so the column gradient's pixels are packed before the calls.
        Shape(
            label: "column gradient, dy's rows crowding the cache", n: 2, c: 3, h: 46, w: 70, k: 40, r: 3, s: 3,
            stride: (3, 3), pad: (1, 1)),
        Shape(label: "many images (4 weight blocks)", n: 9, c: 3, h: 5, w: 5, k: 4, r: 3, s: 3, pad: (1, 1)),
        // Column gradients over 4 MB go through a ring of output rows (the backward-data): 4 rows a
        // chunk here, 81 rows (a short last chunk); with an 11 × 11 kernel the chunk is the 10 rows
        // the gather reaches back.
        Shape(
            label: "column gradient in a ring, 7x7 stride 2", n: 2, c: 4, h: 161, w: 157, k: 5, r: 7, s: 7,
            stride: (2, 2), pad: (3, 3)),
        Shape(label: "column gradient in a ring, 11x11", n: 1, c: 8, h: 110, w: 104, k: 3, r: 11, s: 11),
        // The direct weight gradient with stride 2: 5 × 5 taps in two column phases, odd sizes (a
        // last column the kernel reaches past), padding skipped at both ends of a row.
        Shape(
            label: "direct weights, 5x5 stride 2", n: 2, c: 6, h: 17, w: 19, k: 20, r: 5, s: 5, stride: (2, 2),
            pad: (2, 2)),
        Shape(
            label: "over 320 taps and 320 channels (two reduction blocks each way)", n: 2, c: 40, h: 4, w: 5, k: 330,
            r: 3, s: 3, pad: (1, 1)),
        // The direct kernels' cases (stride 1, at least 64 taps, 2% of them on padding): channel
        // blocks of 16 with a short last one, rows of several segments, dilation, padding wider than
        // the skipped edges, groups, kernels 3, 5 and 7 wide (the direct weight gradient's).
        Shape(label: "direct, 5x5 pad 2", n: 3, c: 20, h: 14, w: 14, k: 40, r: 5, s: 5, pad: (2, 2)),
        Shape(
            label: "direct, wide rows, dilation 2", n: 2, c: 8, h: 11, w: 37, k: 17, r: 3, s: 3, pad: (3, 2),
            dilation: (2, 2)),
        Shape(
            label: "direct, padding 4, groups 2", n: 2, c: 16, h: 9, w: 12, k: 24, r: 5, s: 5, pad: (4, 4),
            groups: 2),
        Shape(label: "direct, 3x7 kernel", n: 1, c: 12, h: 8, w: 19, k: 33, r: 3, s: 7, pad: (1, 3)),
        // At most 24 taps per group (1 or 2 input channels of 3x3): the direct weight gradient holds
        // every kernel row in one block and skips no padding row (with groups too).
        Shape(label: "direct weights, one input channel", n: 2, c: 1, h: 9, w: 20, k: 20, r: 3, s: 3, pad: (1, 1)),
        Shape(
            label: "direct weights, two input channels per group", n: 2, c: 4, h: 7, w: 6, k: 34, r: 3, s: 3,
            pad: (2, 1), groups: 2),
        // 400 pixels: the weight gradient's two chunks, the first ending inside a row.
        Shape(label: "direct, two pixel chunks", n: 2, c: 8, h: 20, w: 20, k: 20, r: 3, s: 3, pad: (1, 1)),
        // The backward-data as a forward of dy with the flipped kernel (stride 1, 64 input channels per
        // group, padding skipped): also with groups and dilation.
        Shape(label: "backward-data as a forward", n: 2, c: 64, h: 6, w: 7, k: 24, r: 3, s: 3, pad: (1, 1)),
        Shape(
            label: "backward-data as a forward, groups 2, dilation 2", n: 1, c: 128, h: 7, w: 9, k: 32, r: 3,
            s: 2, pad: (2, 1), dilation: (2, 2), groups: 2),
        // Winograd's F(2x2, r x r), r = 2, 3, 5 (stride 1, one group, 16 or more channels each
        // way): odd output sizes (a last tile half outside), paddings 0 to r − 1 (the backward-data's
        // forward has r − 1 − pad), a channel block of 16 with a short last one, rows wider than one
        // 16-pixel transpose and one 8-tile input vector, and images split into several bands of
        // tile rows.
        Shape(label: "Winograd, odd sizes, no padding", n: 2, c: 16, h: 9, w: 11, k: 20, r: 3, s: 3),
        Shape(label: "Winograd, wide rows, padding 2", n: 1, c: 17, h: 6, w: 37, k: 33, r: 3, s: 3, pad: (2, 2)),
        Shape(label: "Winograd, padding (1, 0)", n: 3, c: 24, h: 7, w: 8, k: 16, r: 3, s: 3, pad: (1, 0)),
        Shape(label: "Winograd, several bands", n: 1, c: 200, h: 20, w: 19, k: 18, r: 3, s: 3, pad: (1, 1)),
        Shape(label: "Winograd 5x5, padding (1, 3)", n: 2, c: 16, h: 9, w: 11, k: 17, r: 5, s: 5, pad: (1, 3)),
        Shape(label: "Winograd 5x5, wide rows, no padding", n: 1, c: 19, h: 8, w: 40, k: 32, r: 5, s: 5),
        Shape(label: "Winograd 2x2, padding 1", n: 2, c: 16, h: 8, w: 9, k: 18, r: 2, s: 2, pad: (1, 1)),
        Shape(
            label: "Winograd 2x2, wide rows, padding (0, 1)", n: 1, c: 20, h: 7, w: 38, k: 33, r: 2, s: 2, pad: (0, 1)),
        // Stride 2 with kernels of 4, 6 and 10 over the input's four phases stacked as channels
        // (conv2d_phases.c): paddings even and odd, rows and columns no window reaches (their
        // input gradient 0), rows wider than 32 floats.
        Shape(label: "phases 4x4, padding 1", n: 2, c: 5, h: 12, w: 13, k: 17, r: 4, s: 4, stride: (2, 2), pad: (1, 1)),
        Shape(
            label: "phases 4x4, unreached rows, padding (0, 2)", n: 1, c: 4, h: 9, w: 40, k: 16, r: 4, s: 4,
            stride: (2, 2), pad: (0, 2)),
        Shape(label: "phases 6x6, padding 3", n: 2, c: 6, h: 11, w: 10, k: 20, r: 6, s: 6, stride: (2, 2), pad: (3, 3)),
        Shape(
            label: "phases 10x10, padding 4", n: 1, c: 4, h: 14, w: 15, k: 16, r: 10, s: 10, stride: (2, 2), pad: (4, 4)
        ),
        // 3x3 with stride 2 read from x itself (conv2d_stride2.c, AVX-512): padding 1 on every side
        // (a last row and column that reach past an odd-sized image), output rows of several segments,
        // a short last block of 32 output channels, two blocks of taps; and padding 0.
        Shape(
            label: "stride 2 from x, odd sizes, three segments", n: 2, c: 8, h: 11, w: 61, k: 40, r: 3, s: 3,
            stride: (2, 2), pad: (1, 1)),
        Shape(
            label: "stride 2 from x, two blocks of taps, segments of 14", n: 2, c: 64, h: 10, w: 56, k: 64, r: 3, s: 3,
            stride: (2, 2), pad: (1, 1)),
        Shape(
            label: "stride 2 from x, no padding", n: 1, c: 40, h: 9, w: 10, k: 33, r: 3, s: 3, stride: (2, 2)),
    ]

    @Test("forward, backward-data and backward-weights match the references", arguments: shapes)
    func matchesReference(_ shape: Shape) {
        var p = shape.params
        let cg = shape.c / shape.groups
        var random = TestRandom(seed: UInt64(shape.n * 100 + shape.c * 10 + shape.k))
        let x = random.floats(shape.n * shape.c * shape.h * shape.w)
        let weight = random.floats(shape.k * cg * shape.r * shape.s)
        let outCount = shape.n * shape.k * Int(p.out_h * p.out_w)
        let dy = random.floats(outCount)

        var y = [Float](repeating: .nan, count: outCount), yRef = y
        bp_conv2d_forward(&y, x, weight, nil, &p)
        bp_conv2d_forward_ref(&yRef, x, weight, &p)
        #expect(relativeError(y, yRef) < 1e-5, "forward \(shape)")

        var dx = [Float](repeating: .nan, count: x.count), dxRef = dx
        bp_conv2d_backward_data(&dx, dy, weight, nil, &p)
        bp_conv2d_backward_data_ref(&dxRef, dy, weight, &p)
        #expect(relativeError(dx, dxRef) < 1e-5, "backward-data \(shape)")

        // A bias is added to each finished sum: the bits of adding it afterwards, on either side.
        let outBias = random.floats(shape.k), inBias = random.floats(shape.c)
        var yBias = [Float](repeating: .nan, count: outCount), dxBias = [Float](repeating: .nan, count: x.count)
        bp_conv2d_forward(&yBias, x, weight, outBias, &p)
        bp_conv2d_backward_data(&dxBias, dy, weight, inBias, &p)
        let plane = Int(p.out_h * p.out_w), inPlane = shape.h * shape.w
        let yPlusBias = y.indices.map { y[$0] + outBias[$0 / plane % shape.k] }
        let dxPlusBias = dx.indices.map { dx[$0] + inBias[$0 / inPlane % shape.c] }
        #expect(bits(yBias) == bits(yPlusBias), "forward with bias \(shape)")
        #expect(bits(dxBias) == bits(dxPlusBias), "backward-data with bias \(shape)")

        let start = random.floats(weight.count), biasStart = random.floats(shape.k)  // gradients accumulate
        var dw = start, dwRef = start, db = biasStart
        bp_conv2d_backward_weights(&dw, &db, dy, x, &p)
        bp_conv2d_backward_weights_ref(&dwRef, dy, x, &p)
        #expect(relativeError(dw, dwRef) < 1e-5, "backward-weights \(shape)")
        let dbRef = (0..<shape.k).map { k in
            Float(
                (0..<shape.n).reduce(Double(biasStart[k])) { sum, b in
                    (0..<plane).reduce(sum) { $0 + Double(dy[(b * shape.k + k) * plane + $1]) }
                })
        }
        #expect(relativeError(db, dbRef) < 1e-5, "bias gradient with the weight gradient \(shape)")
        var dwOnly = start
        bp_conv2d_backward_weights(&dwOnly, nil, dy, x, &p)
        #expect(bits(dwOnly) == bits(dw), "the weight gradient does not depend on the bias gradient's \(shape)")
    }

    @Test("bias gradient")
    func bias() {
        var random = TestRandom(seed: 1)
        let (n, c, hw) = (3, 4, 50)
        let dy = random.floats(n * c * hw)
        var db: [Float] = [1, 2, 3, 4]
        bp_channel_bias_backward(&db, dy, Int64(n), Int64(c), Int64(hw))
        for ch in 0..<c {
            var sum = Double(ch + 1)
            for b in 0..<n { for i in 0..<hw { sum += Double(dy[(b * c + ch) * hw + i]) } }
            #expect(abs(Double(db[ch]) - sum) < 1e-4)
        }
    }

    /// The column-matrix product (8 channels), Winograd's F(2x2, r x r) for r = 3, 5, 2 (16 or more
    /// channels each way; 7 images: the weight gradient's 4 blocks split unevenly over the threads).
    @Test(
        "convolution kernels are bit-identical for 1, 2 and 3 threads",
        arguments: [
            Shape(label: "product", n: 7, c: 8, h: 20, w: 20, k: 16, r: 3, s: 3, pad: (1, 1)),
            Shape(label: "Winograd 3x3", n: 7, c: 16, h: 9, w: 13, k: 20, r: 3, s: 3, pad: (1, 1)),
            Shape(label: "Winograd 5x5", n: 7, c: 17, h: 9, w: 8, k: 16, r: 5, s: 5, pad: (2, 2)),
            Shape(label: "Winograd 2x2", n: 7, c: 16, h: 10, w: 11, k: 17, r: 2, s: 2, pad: (1, 1)),
            Shape(label: "phases 4x4", n: 7, c: 4, h: 12, w: 11, k: 16, r: 4, s: 4, stride: (2, 2), pad: (1, 1)),
        ])
    func threadInvariance(_ shape: Shape) {
        var p = shape.params
        var random = TestRandom(seed: 9)
        let x = random.floats(shape.n * shape.c * shape.h * shape.w)
        let weight = random.floats(shape.k * shape.c * shape.r * shape.s)
        let dy = random.floats(shape.n * shape.k * Int(p.out_h * p.out_w))
        let bias = random.floats(shape.k), inBias = random.floats(shape.c)
        func run() -> [[UInt32]] {
            var y = [Float](repeating: 0, count: dy.count), dx = x, dw = weight,
                db = [Float](repeating: 0, count: shape.k)
            bp_conv2d_forward(&y, x, weight, bias, &p)
            bp_conv2d_backward_data(&dx, dy, weight, inBias, &p)
            bp_conv2d_backward_weights(&dw, &db, dy, x, &p)
            return [bits(y), bits(dx), bits(dw), bits(db)]
        }
        expectBitIdentical(run)
    }
    /// The weight gradient of a convolution with few taps (at most 25, stride 1) runs on a direct
    /// kernel (conv2d_direct.c, conv2d_direct_avx2.c) that sums in the product's chunks and order;
    /// the same convolution with one more input channel has too many taps for it and runs on the
    /// column-matrix product. Each element of dW sums over the pixels alone, so the taps of the
    /// channels both have are the same sums: the same bits.
    @Test(
        "the direct weight gradient gives the column-matrix product's bits",
        arguments: [(c: 1, r: 5, pad: 2), (2, 3, 1)])
    func directWeightsMatchTheProduct(_ shape: (c: Int, r: Int, pad: Int)) {
        let (n, c, r, h, w, k) = (5, shape.c, shape.r, 23, 19, 20)
        let few = Shape(label: "few taps", n: n, c: c, h: h, w: w, k: k, r: r, s: r, pad: (shape.pad, shape.pad))
        let more = Shape(label: "more taps", n: n, c: c + 1, h: h, w: w, k: k, r: r, s: r, pad: (shape.pad, shape.pad))
        var p = few.params, q = more.params
        var random = TestRandom(seed: 23)
        let plane = h * w, taps = r * r
        let xMore = random.floats(n * (c + 1) * plane), dy = random.floats(n * k * plane)
        // x of the smaller convolution: each image's first c channels.
        var x = [Float]()
        for image in 0..<n { x += xMore[(image * (c + 1) * plane)..<((image * (c + 1) + c) * plane)] }
        var dw = [Float](repeating: 0, count: k * c * taps), dwMore = [Float](repeating: 0, count: k * (c + 1) * taps)
        var db = [Float](repeating: 0, count: k), dbMore = db
        bp_conv2d_backward_weights(&dw, &db, dy, x, &p)
        bp_conv2d_backward_weights(&dwMore, &dbMore, dy, xMore, &q)
        var shared = [Float]()
        for o in 0..<k { shared += dwMore[(o * (c + 1) * taps)..<((o * (c + 1) + c) * taps)] }
        #expect(bits(dw) == bits(shared))
        #expect(bits(db) == bits(dbMore))
    }

    /// The product's weight gradient reads dy's rows in place for up to 64 output channels per
    /// group and packs them beyond: the same convolution with 64 and with 65 output channels (dy
    /// the same for the first 64) must give those channels' gradients to the bit. 7 × 7 stride 2
    /// on 21 × 21 images: 121 pixels of dy rows a chunk; 5 images: four blocks of images.
    @Test("the weight gradient reads dy in place or packed to the same bits")
    func weightGradientDyInPlaceMatchesPacked() {
        let (n, c, h, r, k) = (5, 3, 21, 7, 64)
        let few = Shape(label: "dy in place", n: n, c: c, h: h, w: h, k: k, r: r, s: r, stride: (2, 2), pad: (3, 3))
        let more = Shape(
            label: "dy packed", n: n, c: c, h: h, w: h, k: k + 1, r: r, s: r, stride: (2, 2), pad: (3, 3))
        var p = few.params, q = more.params
        var random = TestRandom(seed: 29)
        let pixels = Int(p.out_h * p.out_w), taps = c * r * r
        let x = random.floats(n * c * h * h), dyMore = random.floats(n * (k + 1) * pixels)
        // dy of the smaller convolution: each image's first k channels.
        var dy = [Float]()
        for image in 0..<n { dy += dyMore[(image * (k + 1) * pixels)..<((image * (k + 1) + k) * pixels)] }
        var dw = [Float](repeating: 0, count: k * taps), dwMore = [Float](repeating: 0, count: (k + 1) * taps)
        var db = [Float](repeating: 0, count: k), dbMore = [Float](repeating: 0, count: k + 1)
        bp_conv2d_backward_weights(&dw, &db, dy, x, &p)
        bp_conv2d_backward_weights(&dwMore, &dbMore, dyMore, x, &q)
        #expect(bits(dw) == bits(Array(dwMore[0..<(k * taps)])))
        #expect(bits(db) == bits(Array(dbMore[0..<k])))
    }

    /// On AVX2 the 3 × 3 stride-2 forward reads x directly for up to 64 output channels and runs
    /// on the column-matrix product beyond: the same convolution with 64 and with 65 output
    /// channels (the same weights for the first 64) must give those channels' outputs to the bit.
    /// 40 input channels: two blocks of taps. (With AVX-512 both run the direct kernel.)
    @Test(
        "the stride-2 forward from x gives the product's bits",
        arguments: [(h: 15, w: 17, pad: 1), (14, 13, 0)])
    func stride2ForwardMatchesTheProduct(_ shape: (h: Int, w: Int, pad: Int)) {
        let (n, c, k) = (3, 40, 64)
        let pad = (shape.pad, shape.pad)
        let few = Shape(label: "from x", n: n, c: c, h: shape.h, w: shape.w, k: k, r: 3, s: 3, stride: (2, 2), pad: pad)
        let more = Shape(
            label: "product", n: n, c: c, h: shape.h, w: shape.w, k: k + 1, r: 3, s: 3, stride: (2, 2), pad: pad)
        var p = few.params, q = more.params
        var random = TestRandom(seed: 31)
        let pixels = Int(p.out_h * p.out_w), taps = c * 9
        let x = random.floats(n * c * shape.h * shape.w), weightMore = random.floats((k + 1) * taps)
        let biasMore = random.floats(k + 1)
        var y = [Float](repeating: 0, count: n * k * pixels), yMore = [Float](repeating: 0, count: n * (k + 1) * pixels)
        bp_conv2d_forward(&y, x, Array(weightMore[0..<(k * taps)]), Array(biasMore[0..<k]), &p)
        bp_conv2d_forward(&yMore, x, weightMore, biasMore, &q)
        var shared = [Float]()
        for image in 0..<n { shared += yMore[(image * (k + 1) * pixels)..<((image * (k + 1) + k) * pixels)] }
        #expect(bits(y) == bits(shared))
    }

    /// A 1 × 1 convolution without padding or stride runs as plain products of the tensors
    /// (conv2d.c's pointwise section); the same convolution with padding 1 runs on the column
    /// matrix. Its interior outputs read the same inputs, its input gradient with dy zero on the
    /// border is the same sums, and its weight gradient adds only zero terms besides, so both give
    /// the same
    /// bits: the products sum in the column matrix's blocks and order. 700 channels: three blocks.
    /// (The weight gradient's pixels are one chunk in either, 36 and 64.)
    /// 6 × 6: the input gradient as one transposed product over the images (fewer than 128 pixels);
    /// 12 × 12 with c ≥ k: image by image, A transposed; with c < k: the column gradient written
    /// into dx (700 channels deep: three blocks).
    @Test(
        "1x1 convolutions as plain products give the column-matrix products' bits",
        arguments: [(c: 700, k: 20, side: 6), (300, 20, 12), (20, 700, 12)])
    func pointwiseProductsMatchTheColumnMatrix(_ shape: (c: Int, k: Int, side: Int)) {
        let (n, c, k, side) = (2, shape.c, shape.k, shape.side)
        let plain = Shape(label: "1x1", n: n, c: c, h: side, w: side, k: k, r: 1, s: 1)
        let padded = Shape(label: "1x1 pad 1", n: n, c: c, h: side, w: side, k: k, r: 1, s: 1, pad: (1, 1))
        var p = plain.params, q = padded.params
        var random = TestRandom(seed: 17)
        let x = random.floats(n * c * side * side), weight = random.floats(k * c), bias = random.floats(k)
        let dy = random.floats(n * k * side * side)
        let outer = side + 2
        // dy of the padded output: dy inside, zero on the border ring.
        var dyPadded = [Float](repeating: 0, count: n * k * outer * outer)
        for plane in 0..<(n * k) {
            for row in 0..<side {
                for col in 0..<side {
                    dyPadded[(plane * outer + row + 1) * outer + col + 1] = dy[(plane * side + row) * side + col]
                }
            }
        }
        var y = [Float](repeating: .nan, count: n * k * side * side), yPadded = dyPadded
        bp_conv2d_forward(&y, x, weight, bias, &p)
        bp_conv2d_forward(&yPadded, x, weight, bias, &q)
        var interior = [Float]()
        for plane in 0..<(n * k) {
            for row in 0..<side {
                for col in 0..<side { interior.append(yPadded[(plane * outer + row + 1) * outer + col + 1]) }
            }
        }
        #expect(bits(y) == bits(interior))
        var dw = [Float](repeating: 0, count: k * c), dwPadded = dw
        var db = [Float](repeating: 0, count: k), dbPadded = db
        bp_conv2d_backward_weights(&dw, &db, dy, x, &p)
        bp_conv2d_backward_weights(&dwPadded, &dbPadded, dyPadded, x, &q)
        #expect(bits(dw) == bits(dwPadded))
        var dx = [Float](repeating: .nan, count: x.count), dxPadded = dx
        let inBias = random.floats(c)
        bp_conv2d_backward_data(&dx, dy, weight, inBias, &p)
        bp_conv2d_backward_data(&dxPadded, dyPadded, weight, inBias, &q)
        #expect(bits(dx) == bits(dxPadded))
        // The bias gradient sums 8 lanes by pixel position, which the border shifts: close, not the same.
        #expect(relativeError(db, dbPadded) < 1e-5)
    }
}
