import Backprop
import BackpropTestSupport
import Testing

@Suite struct NormalizationTests {
    /// `model(norm)` for a BatchNorm2D(3) with random weight, bias and running variance, checked by
    /// finite differences in training and in evaluation mode.
    private func expectGradientsInBothModes(_ model: (BatchNorm) throws -> Module) throws {
        for training in [true, false] {
            let norm = try BatchNorm2D(3)
            try norm.weight!.load(randomTensor([3], seed: 1, 0.5, 1.5), name: "weight")
            try norm.bias!.load(randomTensor([3], seed: 2), name: "bias")
            try norm.runningVar!.load(randomTensor([3], seed: 3, 0.5, 2), name: "running_var")
            let checked = try model(norm)
            checked.isTraining = training
            let report = try GradientCheck.run(
                checked, input: randomTensor([2, 3, 4, 5], seed: 4, -2, 2), epsilon: 1e-2)
            #expect(report.passed, "training \(training): \(report)")
        }
    }

    @Test func batchNormGradientsInBothModes() throws {
        try expectGradientsInBothModes { $0 }
        let oneD = try BatchNorm1D(4)
        try expectGradientsCorrect(oneD, input: randomTensor([6, 4], seed: 5))
        try expectGradientsCorrect(try BatchNorm1D(4, affine: false), input: randomTensor([3, 4, 5], seed: 6))
    }

    /// Sequential runs BatchNorm + ReLU fused: its backward (the gate recomputed from the input)
    /// checked by finite differences, in both modes.
    @Test func fusedBatchNormReLUGradientsInBothModes() throws {
        try expectGradientsInBothModes { Sequential($0, ReLU()) }
    }

    /// Sequential runs BatchNorm + ReLU + MaxPool2D fused in training (the pooled gradient expanded
    /// plane by plane inside the normalization's backward), the three one by one in evaluation:
    /// both checked by finite differences, on 4 × 5 planes (a column outside every window).
    @Test func fusedBatchNormReLUMaxPoolGradientsInBothModes() throws {
        try expectGradientsInBothModes { Sequential($0, ReLU(), try MaxPool2D(kernelSize: 2)) }
    }

    @Test func layerNormGradients() throws {
        let layer = try LayerNorm([4, 5])
        try layer.weight!.load(randomTensor([4, 5], seed: 1, 0.5, 1.5), name: "weight")
        try expectGradientsCorrect(layer, input: randomTensor([3, 4, 5], seed: 2, -2, 2))
        // 11 features: eight in the vector loop, three after it.
        try expectGradientsCorrect(try LayerNorm(11, bias: false), input: randomTensor([5, 11], seed: 3))
        try expectGradientsCorrect(try LayerNorm(11, elementwiseAffine: false), input: randomTensor([5, 11], seed: 4))
        #expect(try LayerNorm(6, bias: false).namedParameters.map(\.name) == ["weight"])
    }

    /// Without a weight or a bias, layer norm gives the bits of the affine layer at weight 1 and bias
    /// 0 (PyTorch's initial values), forward and backward; 768 features (the vector loops) and 11.
    @Test(arguments: [768, 11])
    func withoutAffineIsTheInitialAffine(features: Int) throws {
        let x = randomTensor([6, features], seed: 7, -2, 2), dy = randomTensor([6, features], seed: 8)
        var results: [[[UInt32]]] = []
        for layer in [
            try LayerNorm(features), try LayerNorm(features, bias: false),
            try LayerNorm(features, elementwiseAffine: false),
        ] {
            let (y, backward) = try layer.forward(x)
            results.append([bits(y.scalars), bits(try backward(dy).scalars)])
        }
        let (withoutBias, withoutAffine) = (results[1] == results[0], results[2] == results[0])
        #expect(withoutBias)
        #expect(withoutAffine)
    }

    /// Running statistics follow PyTorch: after one training step from (0, 1) with momentum 0.1,
    /// running_mean = 0.1 · mean and running_var = 0.9 + 0.1 · unbiased variance. Batch [1, 3]:
    /// mean 2, unbiased variance 2.
    @Test func runningStatisticsByHand() throws {
        let layer = try BatchNorm1D(1)
        _ = try layer(Tensor(shape: [2, 1], scalars: [1, 3]))
        #expect(abs(layer.runningMean!.value[0] - 0.2) < 1e-6)
        #expect(abs(layer.runningVar!.value[0] - 1.1) < 1e-6)
        layer.isTraining = false
        // Evaluation: (x − 0.2) / √(1.1 + 1e-5).
        let y = try layer(Tensor(shape: [1, 1], scalars: [1.3]))
        #expect(abs(Double(y[0]) - 1.1 / (1.1 + 1e-5).squareRoot()) < 1e-6)
        #expect(layer.namedBuffers.map(\.name) == ["running_mean", "running_var"])
    }

    @Test func badInputThrows() throws {
        let layer = try BatchNorm2D(3)
        expectError(.shapeMismatch, mentioning: ["BatchNorm2D(3)", "[2, 4, 5, 5]", "expected [N, 3, H, W]"]) {
            _ = try layer(Tensor(shape: [2, 4, 5, 5]))
        }
        expectError(.invalidArgument, mentioning: ["BatchNorm1D(3)", "expected more than 1 value per channel"]) {
            _ = try BatchNorm1D(3)(Tensor(shape: [1, 3]))
        }
        expectError(.shapeMismatch, mentioning: ["BatchNorm1D(3)", "expected [N, 3] or [N, 3, L]"]) {
            _ = try BatchNorm1D(3)(Tensor(shape: [2, 3, 4, 4]))
        }
        expectError(.invalidArgument, mentioning: ["eps must be > 0"]) { _ = try BatchNorm2D(3, eps: 0) }
        expectError(.invalidArgument, mentioning: ["LayerNorm([4])", "eps must be > 0"]) {
            _ = try LayerNorm(4, eps: -1)
        }
        expectError(.shapeMismatch, mentioning: ["LayerNorm([4, 5])", "[3, 5, 4]", "expected [*, 4, 5]"]) {
            _ = try LayerNorm([4, 5])(Tensor(shape: [3, 5, 4]))
        }
        // A single value per channel is fine in evaluation mode.
        let eval = try BatchNorm1D(3)
        eval.isTraining = false
        #expect(try eval(Tensor(shape: [1, 3])).shape == [1, 3])
    }
}
