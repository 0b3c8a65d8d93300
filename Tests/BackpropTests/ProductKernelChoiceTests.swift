import Backprop
import BackpropTestSupport
import Testing

/// Recurrent layers run their step products on the float32 product kernel (panel_product.c): the
/// AVX-512 one and the AVX2 one give the same bits (CKernelsTests.ProductKernelTests does the
/// convolutions).
@Suite struct ProductKernelChoiceTests {
    static let layers: [@Sendable () throws -> RecurrentLayer] = [
        // 13 rows cross both kernels' row blocks (6 and 8), 300 inputs two depth blocks of 256.
        { try LSTM(inputSize: 300, hiddenSize: 24, layers: 2, batchFirst: true, bidirectional: true, seed: 7) },
        { try GRU(inputSize: 11, hiddenSize: 37, batchFirst: true, seed: 8) },
        { try RNN(inputSize: 11, hiddenSize: 9, batchFirst: true, seed: 9) },
    ]

    @Test(arguments: 0..<3)
    func recurrentLayersGiveTheSameBitsWithEitherKernel(_ which: Int) throws {
        let layer = try Self.layers[which]()
        func pass(forcingAVX2: Bool) throws -> [[UInt32]] {
            try withProductKernel(forcingAVX2: forcingAVX2) { _ in
                layer.zeroGrad()
                let x = randomTensor([13, 5, layer.inputSize], seed: 5)
                let (y, backward) = try layer.forward(x)
                let dx = try backward(randomTensor(y.shape, seed: 6))
                return [bits(y.scalars), bits(dx.scalars)]
                    + layer.namedParameters.map { bits($0.parameter.grad.scalars) }
            }
        }
        #expect(try pass(forcingAVX2: false) == pass(forcingAVX2: true))
    }
}
