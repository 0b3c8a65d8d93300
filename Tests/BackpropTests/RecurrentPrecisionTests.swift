import Backprop
import BackpropTestSupport
import CKernels
import Testing

/// Recurrent layers under `Precision.$current.withValue(.bf16)`: every product (the input projection,
/// the step products, the weight and input gradients) is bp_bf16_gemm's, the same bits on the
/// instruction and emulation paths and for any thread count, and close to float32's.
@Suite struct RecurrentPrecisionTests {
    /// A ReLU RNN without biases computes h_t = relu((x_t W_ihᵀ + 0) + (h_{t−1} W_hhᵀ + 0)), so its
    /// output is the reference products' sum, bit for bit. 13 rows cross the 12-row tile, 20 units
    /// two unit blocks, 37 inputs an odd depth (each step's input product where it is used), 2101
    /// an odd depth past the products' depth blocks (every step's input product before the steps).
    @Test(arguments: [37, 2101])
    func theStepsAreTheReferenceProducts(input: Int) throws {
        let (n, t, hidden) = (13, 3, 20)
        let rnn = try RNN(
            inputSize: input, hiddenSize: hidden, nonlinearity: .relu, bias: false, batchFirst: true, seed: 2)
        let x = randomTensor([n, t, input], seed: 3)
        let y = try Precision.$current.withValue(.bf16) { try rnn.forward(x).output }
        let weights = Dictionary(
            uniqueKeysWithValues: rnn.namedParameters.map { ($0.name, $0.parameter.value.scalars) })
        let (wih, whh) = (weights["weight_ih_l0"]!, weights["weight_hh_l0"]!)
        var expected = [Float](repeating: 0, count: n * t * hidden), previous = [Float](repeating: 0, count: n * hidden)
        for s in 0..<t {
            var rows: [Float] = []
            for b in 0..<n {
                let first = (b * t + s) * input
                rows += x.scalars[first..<first + input]
            }
            var xp = [Float](repeating: 0, count: n * hidden), hp = xp
            bp_bf16_gemm_ref(
                0, 1, Int64(n), Int64(hidden), Int64(input), rows, Int64(input), wih, Int64(input), &xp, Int64(hidden),
                0)
            bp_bf16_gemm_ref(
                0, 1, Int64(n), Int64(hidden), Int64(hidden), previous, Int64(hidden), whh, Int64(hidden), &hp,
                Int64(hidden), 0)
            for b in 0..<n {
                for j in 0..<hidden {
                    let a = (xp[b * hidden + j] + 0) + (hp[b * hidden + j] + 0)
                    previous[b * hidden + j] = a > 0 ? a : 0
                    expected[(b * t + s) * hidden + j] = previous[b * hidden + j]
                }
            }
        }
        #expect(bits(y.scalars) == bits(expected))
    }

    /// The output, input gradient and every parameter gradient of `layer` on fixed data, in `precision`.
    static func pass(_ layer: RecurrentLayer, _ precision: Precision, emulated: Bool = false) throws -> [[Float]] {
        layer.zeroGrad()
        return try Precision.$current.withValue(precision) {
            try Precision.$emulatesInstruction.withValue(emulated) {
                let x = randomTensor([9, 7, layer.inputSize], seed: 5)
                let (y, backward) = try layer.forward(x)
                let dx = try backward(randomTensor(y.shape, seed: 6))
                return [y.scalars, dx.scalars] + layer.namedParameters.map { $0.parameter.grad.scalars }
            }
        }
    }

    static let layers: [@Sendable () throws -> RecurrentLayer] = [
        { try LSTM(inputSize: 11, hiddenSize: 24, layers: 2, batchFirst: true, bidirectional: true, seed: 7) },
        { try GRU(inputSize: 11, hiddenSize: 17, batchFirst: true, seed: 8) },
        { try RNN(inputSize: 11, hiddenSize: 9, batchFirst: true, seed: 9) },
    ]

    @Test(arguments: 0..<3)
    func theInstructionAndTheEmulationAgreeAtAnyThreadCount(_ which: Int) throws {
        let layer = try Self.layers[which]()
        let runs = try [(1, false), (2, false), (3, true), (1, true)].map { threads, emulated in
            try withThreads(threads) { try Self.pass(layer, .bf16, emulated: emulated) }
        }
        for run in runs.dropFirst() { #expect(run.map(bits) == runs[0].map(bits), "\(layer)") }
    }

    @Test(arguments: 0..<3)
    func bfloat16IsCloseToFloat32(_ which: Int) throws {
        let layer = try Self.layers[which]()
        let single = try Self.pass(layer, .fp32), half = try Self.pass(layer, .bf16)
        for (index, (a, b)) in zip(single, half).enumerated() {
            let error = relativeError(b, a)
            #expect(error < 3e-2 && error > 0, "\(layer), output \(index): relative error \(error)")
        }
    }
}
