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
}
