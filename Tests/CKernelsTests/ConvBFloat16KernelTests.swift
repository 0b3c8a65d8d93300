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

    /// The forward is bp_bf16_gemm's product of each group's weights with the column matrix whose
    /// rows are the taps (channel, row, column) in order.
    @Test func theForwardIsTheReferenceProductOverTheColumnMatrix() {
        let shape = Shape(
            label: "groups, stride, dilation", n: 2, c: 4, h: 9, w: 8, k: 6, r: 3, s: 2, stride: (2, 1), pad: (1, 1),
            dilation: (1, 2), groups: 2)
        let ours = Self.pass(shape, emulate: 0)
        let (x, weight, bias) = (ours[4], ours[5], ours[7])
        let p = shape.params
        let (cg, kg, oh, ow) = (shape.c / 2, shape.k / 2, Int(p.out_h), Int(p.out_w))
        let taps = cg * shape.r * shape.s
        var expected = [Float](repeating: 0, count: ours[0].count)
        for b in 0..<shape.n {
            for g in 0..<2 {
                var col = [Float](repeating: 0, count: taps * oh * ow)
                for t in 0..<taps {
                    let (ci, i, j) = (t / (shape.r * shape.s), t / shape.s % shape.r, t % shape.s)
                    for u in 0..<oh {
                        for v in 0..<ow {
                            let ih = u * 2 - 1 + i, iw = v - 1 + j * 2
                            guard (0..<shape.h).contains(ih), (0..<shape.w).contains(iw) else { continue }
                            col[t * oh * ow + u * ow + v] =
                                x[((b * shape.c + g * cg + ci) * shape.h + ih) * shape.w + iw]
                        }
                    }
                }
                var out = [Float](repeating: 0, count: kg * oh * ow)
                bp_bf16_gemm_ref(
                    0, 0, Int64(kg), Int64(oh * ow), Int64(taps), Array(weight[g * kg * taps..<(g + 1) * kg * taps]),
                    Int64(taps), col, Int64(oh * ow), &out, Int64(oh * ow), 0)
                for o in 0..<kg {
                    for q in 0..<oh * ow {
                        expected[(b * shape.k + g * kg + o) * oh * ow + q] = out[o * oh * ow + q] + bias[g * kg + o]
                    }
                }
            }
        }
        #expect(bits(ours[0]) == bits(expected))
    }
}
