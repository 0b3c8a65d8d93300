import BackpropTestSupport
import CKernels
import Testing

/// Convolutions with bfloat16 products: close to the float32 references on every shape of the
/// convolution tests, the forward bit for bit the reference product over the column matrix, the
/// same bits on the instruction and emulation paths and for any thread count.
@Suite struct ConvBFloat16KernelTests {
    typealias Shape = ConvKernelTests.Shape

    /// y, dx and dweight (from 0.5) of `shape` with bfloat16 products.
    static func pass(_ shape: Shape, emulate: Int32) -> [[Float]] {
        var p = shape.params
        var random = TestRandom(seed: UInt64(shape.n * 100 + shape.c * 10 + shape.k))
        let x = random.floats(shape.n * shape.c * shape.h * shape.w)
        let weight = random.floats(shape.k * shape.c / shape.groups * shape.r * shape.s)
        let outCount = shape.n * shape.k * Int(p.out_h * p.out_w)
        let dy = random.floats(outCount), bias = random.floats(shape.k)
        var y = [Float](repeating: .nan, count: outCount), dx = [Float](repeating: .nan, count: x.count)
        var dw = [Float](repeating: 0.5, count: weight.count), db = [Float](repeating: 0, count: shape.k)
        #expect(bp_conv2d_forward_bf16(&y, x, weight, bias, &p, emulate) == 0)
        #expect(bp_conv2d_backward_data_bf16(&dx, dy, weight, nil, &p, emulate) == 0)
        #expect(bp_conv2d_backward_weights_bf16(&dw, &db, dy, x, &p, emulate) == 0)
        return [y, dx, dw, db, x, weight, dy, bias]
    }

    @Test("close to float32, and the same bits on both paths and any thread count", arguments: ConvKernelTests.shapes)
    func matchesFloat32AndItself(_ shape: Shape) {
        let ours = Self.pass(shape, emulate: 0)
        let (x, weight, dy, bias) = (ours[4], ours[5], ours[6], ours[7])
        var p = shape.params
        var y = [Float](repeating: 0, count: ours[0].count), dx = [Float](repeating: 0, count: x.count)
        var dw = [Float](repeating: 0, count: weight.count)
        bp_conv2d_forward_ref(&y, x, weight, &p)
        let pixels = Int(p.out_h * p.out_w)
        for i in y.indices { y[i] += bias[i / pixels % shape.k] }
        bp_conv2d_backward_data_ref(&dx, dy, weight, &p)
        bp_conv2d_backward_weights_ref(&dw, dy, x, &p)
        #expect(relativeError(ours[0], y) < 2e-2, "forward \(shape)")
        #expect(relativeError(ours[1], dx) < 2e-2, "backward-data \(shape)")
        #expect(relativeError(ours[2].map { $0 - 0.5 }, dw) < 2e-2, "backward-weights \(shape)")

        let emulated = Self.pass(shape, emulate: 1)
        let threads = withThreads(3) { Self.pass(shape, emulate: 0) }
        for i in 0..<4 {
            #expect(bits(emulated[i]) == bits(ours[i]), "emulation, output \(i), \(shape)")
            #expect(bits(threads[i]) == bits(ours[i]), "3 threads, output \(i), \(shape)")
        }
    }

    /// Each pass is bp_bf16_gemm's reference product over the column matrix, whose rows are the taps
    /// (channel, row, column) in order: the forward W_g · col (+ bias); the input gradient
    /// W_gᵀ · dy_g summed onto the pixels tap by tap; the weight gradient dy_g · colᵀ over each image's
    /// pixels, image after image within each of the 4 blocks of images, the blocks then added in order.
    @Test(arguments: [(4, 6, 2), (3, 3, 3)])
    func thePassesAreTheReferenceProductsOverTheColumnMatrix(c: Int, k: Int, groups: Int) {
        let shape = Shape(
            label: "groups, stride, dilation", n: 5, c: c, h: 9, w: 8, k: k, r: 3, s: 2, stride: (2, 1), pad: (1, 1),
            dilation: (1, 2), groups: groups)
        let ours = Self.pass(shape, emulate: 0)
        let (x, weight, dy, bias) = (ours[4], ours[5], ours[6], ours[7])
        let p = shape.params
        let (cg, kg, pixels) = (shape.c / groups, shape.k / groups, Int(p.out_h * p.out_w))
        let taps = cg * shape.r * shape.s
        /// The input pixel (b, group's channel ci, ih, iw) that tap t of pixel q reads, if any.
        func source(_ t: Int, _ q: Int) -> (channel: Int, at: Int)? {
            let (ci, i, j) = (t / (shape.r * shape.s), t / shape.s % shape.r, t % shape.s)
            let ih = q / Int(p.out_w) * 2 - 1 + i, iw = q % Int(p.out_w) - 1 + j * 2
            guard (0..<shape.h).contains(ih), (0..<shape.w).contains(iw) else { return nil }
            return (ci, ih * shape.w + iw)
        }
        var y = [Float](repeating: 0, count: ours[0].count), dx = [Float](repeating: 0, count: x.count)
        var partials = [[Float]](repeating: [Float](repeating: 0, count: weight.count), count: 4)
        for b in 0..<shape.n {
            for g in 0..<groups {
                var col = [Float](repeating: 0, count: taps * pixels)
                for t in 0..<taps {
                    for q in 0..<pixels {
                        if let (ci, at) = source(t, q) {
                            col[t * pixels + q] = x[(b * shape.c + g * cg + ci) * shape.h * shape.w + at]
                        }
                    }
                }
                let wg = Array(weight[g * kg * taps..<(g + 1) * kg * taps])
                let dyg = Array(dy[(b * shape.k + g * kg) * pixels..<(b * shape.k + (g + 1) * kg) * pixels])
                var out = [Float](repeating: 0, count: kg * pixels), dcol = [Float](repeating: 0, count: taps * pixels)
                bp_bf16_gemm_ref(
                    0, 0, Int64(kg), Int64(pixels), Int64(taps), wg, Int64(taps), col, Int64(pixels), &out,
                    Int64(pixels), 0)
                for o in 0..<kg {
                    for q in 0..<pixels {
                        y[(b * shape.k + g * kg + o) * pixels + q] = out[o * pixels + q] + bias[g * kg + o]
                    }
                }
                bp_bf16_gemm_ref(
                    1, 0, Int64(taps), Int64(pixels), Int64(kg), wg, Int64(taps), dyg, Int64(pixels), &dcol,
                    Int64(pixels), 0)
                for t in 0..<taps {
                    for q in 0..<pixels {
                        if let (ci, at) = source(t, q) {
                            dx[(b * shape.c + g * cg + ci) * shape.h * shape.w + at] += dcol[t * pixels + q]
                        }
                    }
                }
                let block = [0, 1, 2, 3, 3][b]
                partials[block].withUnsafeMutableBufferPointer {
                    bp_bf16_gemm_ref(
                        0, 1, Int64(kg), Int64(taps), Int64(pixels), dyg, Int64(pixels), col, Int64(pixels),
                        $0.baseAddress! + g * kg * taps, Int64(taps), 1)
                }
            }
        }
        let dw = weight.indices.map {
            0.5 + (((partials[0][$0] + partials[1][$0]) + partials[2][$0]) + partials[3][$0])
        }
        #expect(bits(ours[0]) == bits(y), "forward")
        #expect(bits(ours[1]) == bits(dx), "backward-data")
        #expect(bits(ours[2]) == bits(dw), "backward-weights")
    }
}
