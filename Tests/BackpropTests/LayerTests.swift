import Backprop
import BackpropTestSupport
import Testing

@Suite struct LinearTests {
    @Test("gradient check passes", arguments: [true, false])
    func gradientCheck(bias: Bool) throws {
        let layer = try Linear(5, 3, bias: bias, seed: 4)
        try expectGradientsCorrect(layer, input: randomTensor([4, 5], seed: 1))
    }

    @Test func leadingAxesAreRows() throws {
        let layer = try Linear(3, 2, seed: 1)
        let x = randomTensor([2, 4, 3], seed: 2)
        let y = try layer(x)
        #expect(y.shape == [2, 4, 2])
        let flat = try layer(x.reshaped(to: [8, 3]))
        #expect(y.scalars == flat.scalars)
        try expectGradientsCorrect(layer, input: x)
    }

    /// y = x Wᵀ + b worked by hand: x = [1, 2], W = [[1, 0], [2, -1]], b = [0.5, -1] → [1.5, -1].
    @Test func handWorkedForward() throws {
        let layer = try Linear(2, 2)
        try layer.weight.load(Tensor(shape: [2, 2], scalars: [1, 0, 2, -1]), name: "weight")
        try layer.bias!.load(Tensor([0.5, -1]), name: "bias")
        #expect(try layer(Tensor(shape: [1, 2], scalars: [1, 2])).scalars == [1.5, -1])
    }

    @Test func pytorchDefaultInitialisationBounds() throws {
        let layer = try Linear(100, 50, seed: 7)
        let bound = 1 / Float(100).squareRoot()
        #expect(layer.weight.value.scalars.allSatisfy { abs($0) <= bound })
        #expect(layer.weight.value.scalars.max()! > 0.9 * bound)
        #expect(layer.bias!.value.scalars.allSatisfy { abs($0) <= bound })
    }

    @Test func badInputThrows() throws {
        expectError(.invalidArgument, mentioning: ["Linear(in: 0, out: 3)"]) { _ = try Linear(0, 3) }
        let layer = try Linear(3, 2)
        expectError(.shapeMismatch, mentioning: ["Linear(in: 3, out: 2)", "[4, 5]", "expected [*, 3]"]) {
            _ = try layer(Tensor(shape: [4, 5]))
        }
        let (_, backward) = try layer.forward(Tensor(shape: [4, 3]))
        expectError(.shapeMismatch, mentioning: ["Linear(in: 3, out: 2) backward", "[4, 3]", "[4, 2]"]) {
            _ = try backward(Tensor(shape: [4, 3]))
        }
        expectError(.shapeMismatch, mentioning: ["parameter weight", "[3, 3]", "[2, 3]"]) {
            try layer.weight.load(Tensor(shape: [3, 3]), name: "weight")
        }
    }
}

@Suite struct ActivationTests {
    static let modules: [@Sendable () -> Module] = [
        { ReLU() }, { LeakyReLU(negativeSlope: 0.1) }, { Sigmoid() }, { Tanh() }, { GELU() },
    ]

    @Test("gradient check passes", arguments: 0..<5)
    func gradientCheck(_ index: Int) throws {
        let module = Self.modules[index]()
        let report = try GradientCheck.run(module, input: randomTensor([3, 7], seed: UInt64(index), -3, 3))
        #expect(report.passed, "\(report)")
    }

    /// PyTorch's convention: ReLU's gradient at exactly 0 is 0.
    @Test func reluAtZero() throws {
        let (y, backward) = try ReLU().forward(Tensor([-1, 0, 2]))
        #expect(y.scalars == [0, 0, 2])
        #expect(try backward(Tensor([5, 5, 5])).scalars == [0, 0, 5])
    }

    @Test func gradientCheckSkipsTheReLUKink() throws {
        let report = try GradientCheck.run(ReLU(), input: Tensor([0, 1, -1, 0.5]))
        #expect(report.passed)
        #expect(report.entries[0].skippedAtKinks == 1 && report.entries[0].checked == 3)
    }

    @Test func flattenKeepsTheBatchAxis() throws {
        let x = randomTensor([2, 3, 4, 5], seed: 1)
        let (y, backward) = try Flatten().forward(x)
        #expect(y.shape == [2, 60] && y.scalars == x.scalars)
        #expect(try backward(y).shape == [2, 3, 4, 5])
        try expectGradientsCorrect(Flatten(), input: x)
    }

    @Test func dropoutTrainingAndEvaluation() throws {
        let dropout = try Dropout(probability: 0.25, seed: 3)
        let x = try Tensor(shape: [1000], repeating: 1)
        let (y, backward) = try dropout.forward(x)
        let kept = y.scalars.filter { $0 != 0 }
        #expect(kept.allSatisfy { $0 == 1 / 0.75 })
        #expect(abs(Double(kept.count) / 1000 - 0.75) < 0.05)
        // The backward routes through the same mask: dx = dy · y / x here.
        #expect(try backward(x).scalars == y.scalars)
        // A second call draws another mask.
        #expect(try dropout(x).scalars != y.scalars)
        dropout.isTraining = false
        #expect(try dropout(x).scalars == x.scalars)
        expectError(.invalidArgument, mentioning: ["Dropout(p: 1.0)"]) { _ = try Dropout(probability: 1) }
    }
}
