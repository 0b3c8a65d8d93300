import Backprop
import BackpropTestSupport
import CKernels
import Testing

/// Linear layers under `Precision.$current.withValue(.bf16)`: the products are bp_bf16_gemm's (bit
/// for bit the reference's), the same bits on the instruction and emulation paths and for any
/// thread count, and close to float32's.
@Suite struct PrecisionTests {
    static let (rows, inFeatures, outFeatures) = (37, 45, 29)

    /// The output, input gradient and weight and bias gradients of a linear layer, in `precision`.
    static func pass(_ precision: Precision, emulated: Bool = false) throws -> [[Float]] {
        try Precision.$current.withValue(precision) {
            try Precision.$emulatesInstruction.withValue(emulated) {
                let layer = try Linear(inFeatures, outFeatures, seed: 3)
                let x = randomTensor([rows, inFeatures], seed: 1), dy = randomTensor([rows, outFeatures], seed: 2)
                let (y, backward) = try layer.forward(x)
                let dx = try backward(dy)
                return [y.scalars, dx.scalars, layer.weight.grad.scalars, layer.bias!.grad.scalars]
            }
        }
    }

    @Test func theProductsAreTheReferenceBFloat16Products() throws {
        let layer = try Linear(Self.inFeatures, Self.outFeatures, seed: 3)
        let x = randomTensor([Self.rows, Self.inFeatures], seed: 1).scalars
        let dy = randomTensor([Self.rows, Self.outFeatures], seed: 2).scalars
        let (m, n, k) = (Int64(Self.rows), Int64(Self.outFeatures), Int64(Self.inFeatures))
        let w = layer.weight.value.scalars, b = layer.bias!.value.scalars
        var y = [Float](repeating: 0, count: Self.rows * Self.outFeatures)
        bp_bf16_gemm_ref(0, 1, m, n, k, x, k, w, k, &y, n, 0)
        for r in 0..<Self.rows { for o in 0..<Self.outFeatures { y[r * Self.outFeatures + o] += b[o] } }
        var dx = [Float](repeating: 0, count: Self.rows * Self.inFeatures)
        bp_bf16_gemm_ref(0, 0, m, k, n, dy, n, w, k, &dx, k, 0)
        var dw = [Float](repeating: 0, count: w.count)
        bp_bf16_gemm_ref(1, 0, n, k, m, dy, n, x, k, &dw, k, 1)
        let ours = try Self.pass(.bf16)
        #expect(bits(ours[0]) == bits(y), "forward")
        #expect(bits(ours[1]) == bits(dx), "input gradient")
        #expect(bits(ours[2]) == bits(dw), "weight gradient")
    }

    @Test func theInstructionAndTheEmulationAgreeAtAnyThreadCount() throws {
        let runs = try [(1, false), (2, false), (3, true), (1, true)].map { threads, emulated in
            try withThreads(threads) { try Self.pass(.bf16, emulated: emulated) }
        }
        for run in runs.dropFirst() { #expect(run.map(bits) == runs[0].map(bits)) }
    }

    @Test func bfloat16IsCloseToFloat32AndFloat32IsTheDefault() throws {
        let single = try Self.pass(.fp32), half = try Self.pass(.bf16)
        for (a, b) in zip(single, half).prefix(3) {  // the products; the bias gradient is a float32 sum
            let error = relativeError(b, a)
            #expect(error < 2e-2 && error > 0, "bfloat16 rounds: relative error \(error)")
        }
        #expect(bits(half[3]) == bits(single[3]))
        let unscoped = try Linear(Self.inFeatures, Self.outFeatures, seed: 3)(
            randomTensor([Self.rows, Self.inFeatures], seed: 1))
        #expect(bits(unscoped.scalars) == bits(single[0]), "float32 outside a scope")
    }

    /// A convolution keeps its input in bfloat16 in a bfloat16 scope, and its weight gradient is still
    /// the kernel's on the whole input: the product rounds it the same way.
    @Test func aConvolutionKeepsItsInputInBFloat16WithoutChangingABit() throws {
        let conv = try Conv2D(3, 8, kernelSize: 3, padding: 1, seed: 5)
        let x = randomTensor([2, 3, 9, 7], seed: 6), dy = randomTensor([2, 8, 9, 7], seed: 7)
        let (_, backward) = try Precision.$current.withValue(.bf16) { try conv.forward(x) }
        _ = try backward(dy)
        var p = bp_conv2d_params(
            n: 2, c: 3, h: 9, w: 7, k: 8, out_h: 9, out_w: 7, r: 3, s: 3, stride_h: 1, stride_w: 1, pad_h: 1, pad_w: 1,
            dilation_h: 1, dilation_w: 1, groups: 1)
        var dw = [Float](repeating: 0, count: conv.weight.value.count), db = [Float](repeating: 0, count: 8)
        #expect(bp_conv2d_backward_weights_bf16(&dw, &db, dy.scalars, x.scalars, &p, 0) == 0)
        #expect(bits(conv.weight.grad.scalars) == bits(dw))
    }

    /// What the default CNN's backwards keep: at most 0.6 of float32's bytes in a bfloat16 scope
    /// (the inputs of convolutions, batch norms, ReLUs and linear layers in bfloat16).
    @Test func theSavedActivationsTakeAtMostSixTenthsInBFloat16() throws {
        let spec =
            "conv2d(1,32,3,pad=1) batchnorm2d(32) relu maxpool2d(2) conv2d(32,64,3,pad=1) batchnorm2d(64) relu maxpool2d(2) flatten linear(3136,128) relu linear(128,10)"
        let x = randomTensor([8, 1, 28, 28], seed: 8)
        let held = try [Precision.fp32, .bf16].map { precision in
            try Precision.$current.withValue(precision) {
                try ModelSpec.build(spec, seed: 1).memoryHeldByBackward(x).map(\.bytes).reduce(0, +)
            }
        }
        #expect(held[0] > 8 * 80_000 * 4, "float32 keeps the inputs whole: \(held[0]) bytes")
        #expect(Double(held[1]) <= 0.6 * Double(held[0]), "bfloat16: \(held[1]) of \(held[0]) bytes")
    }
}
