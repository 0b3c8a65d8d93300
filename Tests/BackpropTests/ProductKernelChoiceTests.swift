import Backprop
import BackpropTestSupport
import Testing

/// Recurrent layers run their step products on the float32 product kernel (panel_product.c): the
/// AVX-512 one and the AVX2 one give the same bits (CKernelsTests.ProductKernelTests does the
/// convolutions).
@Suite struct ProductKernelChoiceTests {
    /// Each layer with the batch's rows it runs.
    static let layers: [@Sendable () throws -> (RecurrentLayer, Int)] = [
        // 13 rows cross both kernels' row blocks (6 and 8), 300 inputs two depth blocks of 256.
        { (try LSTM(inputSize: 300, hiddenSize: 24, layers: 2, batchFirst: true, bidirectional: true, seed: 7), 13) },
        { (try GRU(inputSize: 11, hiddenSize: 37, batchFirst: true, seed: 8), 13) },
        { (try RNN(inputSize: 11, hiddenSize: 9, batchFirst: true, seed: 9), 13) },
        // W_hh (1.8 MB packed) too large for the steps to be shared by rows: with AVX-512 the steps'
        // hidden products take 16 rows at a time (the 16 × 16 kernel), the other 5 through the
        // 8 × 32 one; 330 units end in a block of 10.
        { (try LSTM(inputSize: 7, hiddenSize: 330, batchFirst: true, seed: 10), 21) },
    ]

    @Test(arguments: 0..<4)
    func recurrentLayersGiveTheSameBitsWithEitherKernel(_ which: Int) throws {
        let (layer, rows) = try Self.layers[which]()
        func pass(forcingAVX2: Bool) throws -> [[UInt32]] {
            try withProductKernel(forcingAVX2: forcingAVX2) { _ in
                layer.zeroGrad()
                let x = randomTensor([rows, 5, layer.inputSize], seed: 5)
                let (y, backward) = try layer.forward(x)
                let dx = try backward(randomTensor(y.shape, seed: 6))
                return [bits(y.scalars), bits(dx.scalars)]
                    + layer.namedParameters.map { bits($0.parameter.grad.scalars) }
            }
        }
        #expect(try pass(forcingAVX2: false) == pass(forcingAVX2: true))
    }
}
