import BackpropTestSupport
import CKernels
import Foundation
import Testing

@Suite struct PoolKernelTests {
    /// A labelled pooling case; out_h and out_w as PyTorch computes them.
    struct Case: CustomStringConvertible, Sendable {
        let label: String
        let n, c, h, w: Int
        var kernel = (2, 2), stride = (2, 2), pad = (0, 0), dilation = (1, 1)
        var ceil = false, includePad = true, divisor = 0
        var adaptive: (Int, Int)? = nil

        static func size(_ input: Int, _ k: Int, _ s: Int, _ p: Int, _ d: Int, _ ceil: Bool) -> Int {
            let numerator = input + 2 * p - d * (k - 1) - 1 + (ceil ? s - 1 : 0)
            var out = numerator / s + 1
            if ceil, (out - 1) * s >= input + p { out -= 1 }
            return out
        }

        var params: bp_pool2d_params {
            let outH = adaptive?.0 ?? Self.size(h, kernel.0, stride.0, pad.0, dilation.0, ceil)
            let outW = adaptive?.1 ?? Self.size(w, kernel.1, stride.1, pad.1, dilation.1, ceil)
            return bp_pool2d_params(
                n: Int64(n), c: Int64(c), h: Int64(h), w: Int64(w), out_h: Int64(outH), out_w: Int64(outW),
                kernel_h: Int64(kernel.0), kernel_w: Int64(kernel.1), stride_h: Int64(stride.0),
                stride_w: Int64(stride.1), pad_h: Int64(pad.0), pad_w: Int64(pad.1),
                dilation_h: Int64(dilation.0), dilation_w: Int64(dilation.1),
                adaptive: adaptive == nil ? 0 : 1, count_include_pad: includePad ? 1 : 0,
                divisor_override: Int64(divisor))
        }

        var description: String {
            if let adaptive { return "\(label): \(n)x\(c)x\(h)x\(w) adaptive to \(adaptive)" }
            return
                "\(label): \(n)x\(c)x\(h)x\(w) kernel \(kernel) stride \(stride) pad \(pad) dilation \(dilation) ceil \(ceil) includePad \(includePad) divisor \(divisor)"
        }
    }

    static let cases: [Case] = [
        Case(label: "2x2 stride 2", n: 2, c: 3, h: 6, w: 6),
        Case(label: "odd size, floor", n: 1, c: 2, h: 7, w: 5),
        Case(label: "odd size, ceil", n: 1, c: 2, h: 7, w: 5, ceil: true),
        Case(
            label: "ceil mode never starts in the padding", n: 1, c: 1, h: 5, w: 5, kernel: (2, 2), stride: (2, 2),
            pad: (1, 1), ceil: true),
        Case(label: "3x3 stride 2 pad 1", n: 2, c: 2, h: 7, w: 7, kernel: (3, 3), stride: (2, 2), pad: (1, 1)),
        Case(label: "stride smaller than kernel", n: 1, c: 2, h: 6, w: 5, kernel: (3, 2), stride: (1, 1)),
        Case(label: "stride larger than kernel", n: 1, c: 2, h: 9, w: 10, kernel: (2, 2), stride: (3, 4)),
        Case(
            label: "dilation 2", n: 1, c: 2, h: 9, w: 8, kernel: (3, 2), stride: (1, 2), pad: (1, 1), dilation: (2, 2)),
        Case(label: "1x1 windows", n: 2, c: 2, h: 4, w: 3, kernel: (1, 1), stride: (1, 1)),
        Case(
            label: "exclude padding", n: 1, c: 2, h: 5, w: 5, kernel: (3, 3), stride: (1, 1), pad: (1, 1),
            includePad: false),
        Case(
            label: "divisor override", n: 1, c: 2, h: 5, w: 6, kernel: (3, 3), stride: (2, 2), pad: (1, 1), divisor: 7),
        Case(
            label: "ceil with include-pad clipping", n: 1, c: 1, h: 5, w: 5, kernel: (3, 3), stride: (2, 2),
            pad: (1, 1), ceil: true),
        Case(label: "adaptive, overlapping windows", n: 2, c: 2, h: 7, w: 5, adaptive: (3, 4)),
        Case(label: "adaptive, larger than input", n: 1, c: 2, h: 3, w: 2, adaptive: (5, 4)),
        Case(label: "global", n: 2, c: 3, h: 5, w: 4, adaptive: (1, 1)),
        Case(
            label: "global, 21 planes of 7x7 (two groups of 8 planes and 5 more)", n: 3, c: 7, h: 7, w: 7,
            adaptive: (1, 1)),
        Case(label: "2x2 tiles, rows of 19 windows (two groups of 8 and a tail)", n: 2, c: 3, h: 8, w: 38),
        Case(label: "2x2 tiles, odd sizes leave a row and a column uncovered", n: 1, c: 2, h: 9, w: 21),
        Case(label: "3x3 tiles, stride 3", n: 1, c: 2, h: 10, w: 11, kernel: (3, 3), stride: (3, 3)),
        Case(
            label: "2x2 tiles on 75 planes of 14x7 (stacks of 32 planes and a short one; a column uncovered)",
            n: 3, c: 25, h: 14, w: 7),
        Case(
            label: "3x2 tiles on 40 planes of 9x8 (stacks of planes with rows of 4 windows)", n: 5, c: 8, h: 9, w: 8,
            kernel: (3, 2), stride: (3, 2)),
        Case(
            label: "2x3 tiles, ceil mode on an exact fit", n: 1, c: 2, h: 8, w: 9, kernel: (2, 3), stride: (2, 3),
            ceil: true),
        Case(label: "windows over 256 taps (wide indices)", n: 1, c: 2, h: 20, w: 20, kernel: (17, 17), stride: (3, 3)),
        Case(
            label: "windows with no tap inside the input (dilated taps straddle a narrow input)", n: 1, c: 2, h: 5,
            w: 2,
            kernel: (2, 2), stride: (1, 1), pad: (1, 1), dilation: (3, 3)),
        Case(
            label: "3x3 stride 2 pad 1, rows of 21 outputs (two groups of 8 and a tail)", n: 1, c: 3, h: 9, w: 42,
            kernel: (3, 3), stride: (2, 2), pad: (1, 1)),
        Case(
            label: "stride 3 with padding and ceil mode", n: 1, c: 2, h: 11, w: 13, kernel: (4, 3), stride: (3, 3),
            pad: (2, 1), ceil: true),
        Case(
            label: "3x3 stride 1 pad 1 on 3 planes of 40x37 (rows written straight into the output but the last)",
            n: 1, c: 3, h: 40, w: 37, kernel: (3, 3), stride: (1, 1), pad: (1, 1)),
        Case(
            label: "3x3 stride 2 pad 1 on 3 planes of 40x41 (odd rows written straight into dx), ceil mode", n: 3, c: 1,
            h: 40, w: 41, kernel: (3, 3), stride: (2, 2), pad: (1, 1), ceil: true),
        Case(
            label: "2x4 stride 1 pad (1, 2), divisor override, on 2 planes of 11x19 (the average's image passes)", n: 2,
            c: 1, h: 11, w: 19, kernel: (2, 4), stride: (1, 1), pad: (1, 2), divisor: 5),
    ]

    /// Inputs with ties (values on a coarse grid) and all-negative planes.
    static func input(_ count: Int, seed: UInt64) -> [Float] {
        var random = TestRandom(seed: seed)
        return random.floats(count).enumerated().map { i, v in (v * 4).rounded() / 4 - (i % 3 == 0 ? 5 : 0) }
    }

    @Test("max pooling matches the reference, argmax included", arguments: cases)
    func maxPool(_ c: Case) {
        var p = c.params
        let x = Self.input(c.n * c.c * c.h * c.w, seed: UInt64(c.h * c.w))
        let outCount = c.n * c.c * Int(p.out_h * p.out_w)
        let wide = bp_pool2d_window_size(&p) > 256
        var y = [Float](repeating: .nan, count: outCount), yRef = y
        var index8 = [UInt8](repeating: 0, count: outCount), index32 = [Int32](repeating: 0, count: outCount)
        var indices = [Int64](repeating: 0, count: outCount), indicesRef = indices
        if wide {
            bp_maxpool2d_forward(&y, nil, &index32, x, &p)
            bp_maxpool2d_plane_indices(&indices, nil, index32, &p)
        } else {
            bp_maxpool2d_forward(&y, &index8, nil, x, &p)
            bp_maxpool2d_plane_indices(&indices, index8, nil, &p)
        }
        bp_maxpool2d_forward_ref(&yRef, &indicesRef, x, &p)
        #expect(y == yRef, "forward \(c)")
        #expect(indices == indicesRef, "argmax \(c)")

        var random = TestRandom(seed: 5)
        let dy = random.floats(outCount)
        var dx = [Float](repeating: .nan, count: x.count), dxRef = dx
        if wide {
            bp_maxpool2d_backward(&dx, dy, nil, index32, &p)
        } else {
            bp_maxpool2d_backward(&dx, dy, index8, nil, &p)
        }
        bp_maxpool2d_backward_ref(&dxRef, dy, indicesRef, &p)
        #expect(dx == dxRef, "backward \(c)")
    }

    @Test("average pooling matches the reference", arguments: cases.filter { $0.dilation == (1, 1) })
    func averagePool(_ c: Case) {
        var p = c.params
        let x = Self.input(c.n * c.c * c.h * c.w, seed: UInt64(c.h + c.w))
        let outCount = c.n * c.c * Int(p.out_h * p.out_w)
        var y = [Float](repeating: .nan, count: outCount), yRef = y
        bp_avgpool2d_forward(&y, x, &p)
        bp_avgpool2d_forward_ref(&yRef, x, &p)
        #expect(relativeError(y, yRef) < 1e-6, "forward \(c)")
        var random = TestRandom(seed: 6)
        let dy = random.floats(outCount)
        var dx = [Float](repeating: .nan, count: x.count), dxRef = dx
        bp_avgpool2d_backward(&dx, dy, &p)
        bp_avgpool2d_backward_ref(&dxRef, dy, &p)
        #expect(relativeError(dx, dxRef) < 1e-6, "backward \(c)")
    }

    /// Global pooling sums eight planes side by side (a transposed vector sum) and the rest one
    /// by one: every plane's mean has the same bits either way, whatever its place in the batch.
    @Test("global average pooling: a plane's mean does not depend on the planes beside it", arguments: [49, 64, 5])
    func globalMeanPerPlane(hw: Int) {
        var random = TestRandom(seed: UInt64(hw))
        let planes = 21, x = random.floats(planes * hw)  // full mantissas: the sums round, so order shows
        var p = Case(label: "", n: 1, c: planes, h: hw, w: 1, adaptive: (1, 1)).params
        var y = [Float](repeating: .nan, count: planes)
        bp_avgpool2d_forward(&y, x, &p)
        var one = Case(label: "", n: 1, c: 1, h: hw, w: 1, adaptive: (1, 1)).params
        for plane in 0..<planes {
            var alone: Float = .nan
            bp_avgpool2d_forward(&alone, Array(x[plane * hw..<(plane + 1) * hw]), &one)
            #expect(y[plane].bitPattern == alone.bitPattern, "plane \(plane) of \(planes), \(hw) elements")
        }
    }

    /// A window [1, NaN, 3, NaN]: PyTorch lets a NaN win (the last one seen); ties go to the first.
    @Test("NaN propagates and ties go to the first maximum")
    func nanAndTies() {
        var p = Case(label: "", n: 1, c: 1, h: 2, w: 4).params
        let x: [Float] = [1, .nan, 7, 7, 3, .nan, 7, 2]
        var y = [Float](repeating: 0, count: 2), index8 = [UInt8](repeating: 0, count: 2)
        var indices = [Int64](repeating: 0, count: 2)
        bp_maxpool2d_forward(&y, &index8, nil, x, &p)
        bp_maxpool2d_plane_indices(&indices, index8, nil, &p)
        #expect(y[0].isNaN && indices[0] == 5)
        #expect(y[1] == 7 && indices[1] == 2)
    }

    /// NaNs scattered through long rows (full vector groups and tails): values, argmax and the
    /// backward match the reference bit for bit, for tiled and overlapping windows.
    @Test("NaN in long rows matches the reference", arguments: [(2, 2), (3, 2)])
    func nanInLongRows(kernel: Int, step: Int) {
        let c = Case(label: "nan", n: 2, c: 2, h: 12, w: 44, kernel: (kernel, kernel), stride: (step, step))
        var p = c.params
        var x = Self.input(c.n * c.c * c.h * c.w, seed: 9)
        for i in stride(from: 3, to: x.count, by: 17) { x[i] = .nan }
        let outCount = c.n * c.c * Int(p.out_h * p.out_w)
        var y = [Float](repeating: 0, count: outCount), yRef = y
        var index8 = [UInt8](repeating: 0, count: outCount)
        var indices = [Int64](repeating: 0, count: outCount), indicesRef = indices
        bp_maxpool2d_forward(&y, &index8, nil, x, &p)
        bp_maxpool2d_plane_indices(&indices, index8, nil, &p)
        bp_maxpool2d_forward_ref(&yRef, &indicesRef, x, &p)
        #expect(bits(y) == bits(yRef) && indices == indicesRef, "forward \(c)")
        var random = TestRandom(seed: 3)
        var dy = random.floats(outCount)
        dy[0] = -0.0
        var dx = [Float](repeating: .nan, count: x.count), dxRef = dx
        bp_maxpool2d_backward(&dx, dy, index8, nil, &p)
        bp_maxpool2d_backward_ref(&dxRef, dy, indicesRef, &p)
        #expect(bits(dx) == bits(dxRef), "backward \(c), a -0 gradient included")
    }

    @Test(
        "pooling is bit-identical for 1, 2 and 3 threads",
        arguments: [
            Case(label: "overlapping", n: 3, c: 16, h: 40, w: 40, kernel: (3, 3), stride: (2, 2), pad: (1, 1)),
            Case(
                label: "overlapping, stride 1", n: 3, c: 16, h: 40, w: 37, kernel: (3, 3), stride: (1, 1), pad: (1, 1)),
            Case(label: "tiled", n: 3, c: 16, h: 40, w: 40),
            Case(label: "global, 800 planes (blocks of 256 planes)", n: 4, c: 200, h: 7, w: 7, adaptive: (1, 1)),
        ])
    func threadInvariance(_ c: Case) {
        var p = c.params
        let x = Self.input(c.n * c.c * c.h * c.w, seed: 1)
        let outCount = c.n * c.c * Int(p.out_h * p.out_w)
        var random = TestRandom(seed: 2)
        let dy = random.floats(outCount)
        func run() -> [[UInt32]] {
            var y = [Float](repeating: 0, count: outCount), a = y, dx = x, adx = x
            var index8 = [UInt8](repeating: 0, count: outCount)
            bp_maxpool2d_forward(&y, &index8, nil, x, &p)
            bp_maxpool2d_backward(&dx, dy, index8, nil, &p)
            bp_avgpool2d_forward(&a, x, &p)
            bp_avgpool2d_backward(&adx, dy, &p)
            return [bits(y), bits(dx), bits(a), bits(adx), index8.map(UInt32.init)]
        }
        expectBitIdentical(run)
    }
}
