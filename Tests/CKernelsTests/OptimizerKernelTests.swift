import BackpropTestSupport
import CKernels
import Testing

@Suite struct OptimizerKernelTests {
    /// Three steps of torch.optim.SGD's update rule, written out per element in double.
    @Test("sgd step follows torch.optim.SGD", arguments: [(Float(0), false), (0.9, false), (0.9, true)])
    func sgd(momentum: Float, nesterov: Bool) {
        let (lr, decay): (Float, Float) = (0.1, 0.01)
        var random = TestRandom(seed: 11)
        var param = random.floats(40_000)
        var expected = param.map(Double.init), buffer = [Double](repeating: 0, count: param.count)
        var kernelBuffer = [Float](repeating: 0, count: param.count)
        for step in 0..<3 {
            let grad = random.floats(param.count)
            bp_sgd_step(
                &param, &kernelBuffer, grad, Int64(param.count), lr, momentum, decay,
                nesterov ? 1 : 0, step == 0 ? 1 : 0)
            for i in expected.indices {
                var d = Double(grad[i]) + Double(decay) * expected[i]
                if momentum != 0 {
                    buffer[i] = step == 0 ? d : Double(momentum) * buffer[i] + d
                    d = nesterov ? d + Double(momentum) * buffer[i] : buffer[i]
                }
                expected[i] -= Double(lr) * d
            }
        }
        for i in expected.indices {
            #expect(abs(Double(param[i]) - expected[i]) < 1e-6, "momentum=\(momentum) nesterov=\(nesterov) at \(i)")
        }
    }
}
