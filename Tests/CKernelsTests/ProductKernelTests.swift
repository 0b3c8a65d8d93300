import BackpropTestSupport
import CKernels
import Testing

/// The AVX-512 product (8 × 16 blocks in 16-float registers, and the direct forward that skips
/// padding) and the AVX2 one (6 × 16 in 8-float registers) sum every element in the same order: the
/// convolutions give the same bits with either. On a CPU without AVX-512 both runs use the AVX2
/// kernel (the first test says which ran).
@Suite struct ProductKernelTests {
    @Test("the widest kernel the CPU has runs, unless AVX2 is forced")
    func theKernelFollowsTheCPU() {
        withProductKernel(forcingAVX2: false) { width in
            #expect(width == (bp_cpu_vector_level() >= 2 ? 16 : 8))
        }
        withProductKernel(forcingAVX2: true) { width in #expect(width == 8) }
    }

    static let shapes =
        ConvKernelTests.shapes + [
            // Channel counts that 6 and 8 do not divide, and both dividing 48.
            ConvKernelTests.Shape(label: "70 channels", n: 3, c: 13, h: 9, w: 10, k: 70, r: 3, s: 3, pad: (1, 1)),
            ConvKernelTests.Shape(label: "48 channels", n: 2, c: 48, h: 6, w: 7, k: 48, r: 3, s: 3, pad: (1, 1)),
            // The direct weight gradient with all 25 taps in one block over two pieces of pixels.
            ConvKernelTests.Shape(
                label: "25 taps, 1320 pixels", n: 2, c: 1, h: 40, w: 33, k: 20, r: 5, s: 5, pad: (2, 2)),
        ]

    @Test("convolutions give the same bits with the AVX-512 and the AVX2 product", arguments: shapes)
    func convolutionsAgree(_ shape: ConvKernelTests.Shape) {
        var p = shape.params
        var random = TestRandom(seed: UInt64(shape.k * 7 + shape.c))
        let x = random.floats(shape.n * shape.c * shape.h * shape.w)
        let weight = random.floats(shape.k * shape.c / shape.groups * shape.r * shape.s)
        let dy = random.floats(shape.n * shape.k * Int(p.out_h * p.out_w))
        let bias = random.floats(shape.k), inBias = random.floats(shape.c)
        func run(forcingAVX2: Bool) -> [[UInt32]] {
            withProductKernel(forcingAVX2: forcingAVX2) { _ in
                var y = [Float](repeating: .nan, count: dy.count), dx = [Float](repeating: .nan, count: x.count)
                var dw = weight, db = bias
                bp_conv2d_forward(&y, x, weight, bias, &p)
                bp_conv2d_backward_data(&dx, dy, weight, inBias, &p)
                bp_conv2d_backward_weights(&dw, &db, dy, x, &p)
                return [bits(y), bits(dx), bits(dw), bits(db)]
            }
        }
        #expect(run(forcingAVX2: false) == run(forcingAVX2: true), "\(shape)")
    }
}
