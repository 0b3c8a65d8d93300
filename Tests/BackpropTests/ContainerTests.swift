import Backprop
import BackpropTestSupport
import Testing

@Suite struct ContainerTests {
    @Test func parametersAreNamedAsNNSequential() throws {
        let model = Sequential(
            try Linear(4, 4), ReLU(), Residual(try Linear(4, 4), Tanh(), try Linear(4, 4, bias: false)),
            try Linear(4, 2))
        #expect(
            model.namedParameters.map(\.name)
                == ["0.weight", "0.bias", "2.0.weight", "2.0.bias", "2.2.weight", "3.weight", "3.bias"])
    }

    @Test func sequentialAndResidualGradientsCheck() throws {
        let model = Sequential(
            try Linear(3, 4, seed: 1), Tanh(),
            Residual(try Linear(4, 4, seed: 2), Sigmoid()), try Linear(4, 2, seed: 3))
        try expectGradientsCorrect(model, input: randomTensor([5, 3], seed: 9))
    }

    /// The pooling after a BatchNorm and a ReLU in `fusedBatchNorm`: none, a tiled one (fused with
    /// them in training), and one whose windows overlap (never fused).
    enum PoolAfterNorm: CaseIterable, Sendable {
        case none, tiled, overlapping

        func layers() throws -> [Module] {
            switch self {
            case .none: []
            case .tiled: [try MaxPool2D(kernelSize: 2)]
            case .overlapping: [try MaxPool2D(kernelSize: 3, stride: 2, padding: 1)]
            }
        }
    }

    /// Sequential runs a BatchNorm followed by a ReLU (and a MaxPool2D) as one fused layer: its
    /// output, input gradient, parameter gradients and running statistics must be those of the
    /// layers run one by one, bit for bit, in training and in evaluation mode.
    @Test(
        "a BatchNorm followed by a ReLU (and max pooling) gives the bits of the layers",
        arguments: [true, false], PoolAfterNorm.allCases)
    func fusedBatchNorm(training: Bool, pool: PoolAfterNorm) throws {
        func layers() throws -> [Module] {
            let norm = try BatchNorm2D(3)
            try norm.weight!.load(randomTensor([3], seed: 4, 0.5, 1.5), name: "weight")
            try norm.bias!.load(randomTensor([3], seed: 5), name: "bias")
            try norm.runningVar!.load(randomTensor([3], seed: 6, 0.5, 2), name: "running_var")
            return [try Conv2D(2, 3, kernelSize: 3, padding: 1, seed: 1), norm, ReLU()] + (try pool.layers()) + [
                try Conv2D(3, 2, kernelSize: 1, seed: 2)
            ]
        }
        let x = randomTensor([4, 2, 5, 5], seed: 7)
        let fused = Sequential(try layers())
        fused.isTraining = training
        let (y, backward) = try fused.forward(x)
        let v = randomTensor(y.shape, seed: 8)
        let dx = try backward(v)
        let chain = fused.layers[1].fused(with: fused.layers[2]).flatMap { $0.fused(with: fused.layers[3]) }
        #expect((chain != nil) == (pool != .none), "BatchNorm + ReLU fuses with a MaxPool2D after them")

        let separate = try layers()
        var z = x, backwards: [Backward] = [], outputs: [Tensor] = []
        for layer in separate {
            layer.isTraining = training
            let step = try layer.forward(z)
            z = step.output
            outputs.append(z)
            backwards.append(step.backward)
        }
        #expect(outputs[2].scalars.contains(0) && outputs[2].scalars.contains { $0 > 0 }, "the ReLU cuts some units")
        var g = v
        for step in backwards.reversed() { g = try step(g) }

        func same(_ a: Tensor, _ b: Tensor) -> Bool { a.scalars.map(\.bitPattern) == b.scalars.map(\.bitPattern) }
        #expect(same(y, z), "output")
        #expect(same(dx, g), "input gradient")
        let names = fused.namedParameters.map(\.name)
        for (index, (name, parameter)) in separate.flatMap({ layer in
            layer.namedParameters.map { ($0.name, $0.parameter) }
        }).enumerated() {
            #expect(
                same(fused.namedParameters[index].parameter.grad, parameter.grad),
                "gradient of \(names[index]) (\(name))")
        }
        let fusedNorm = fused.layers[1] as! BatchNorm, separateNorm = separate[1] as! BatchNorm
        #expect(fusedNorm.runningMean!.value.scalars == separateNorm.runningMean!.value.scalars)
        #expect(fusedNorm.runningVar!.value.scalars == separateNorm.runningVar!.value.scalars)
    }

    /// u = body(z) + z, so with body = Linear with W = 0, b = 0 the block is the identity.
    @Test func residualAddsTheIdentityPath() throws {
        let linear = try Linear(2, 2)
        try linear.weight.load(Tensor(shape: [2, 2]), name: "weight")
        try linear.bias!.load(Tensor(shape: [2]), name: "bias")
        let (y, backward) = try Residual(linear).forward(Tensor(shape: [1, 2], scalars: [3, -4]))
        #expect(y.scalars == [3, -4])
        #expect(try backward(Tensor(shape: [1, 2], scalars: [1, 2])).scalars == [1, 2])
    }

    @Test func residualBodyMustKeepTheShape() throws {
        expectError(.shapeMismatch, mentioning: ["Residual(Linear(in: 3, out: 2))", "[1, 2]", "[1, 3]"]) {
            _ = try Residual(try Linear(3, 2))(Tensor(shape: [1, 3]))
        }
    }

    /// Two forwards before either backward: each closure keeps its own input, and parameter
    /// gradients add up to the sum of both.
    @Test func twoForwardsThenTwoBackwards() throws {
        let model = Sequential(try Linear(3, 3, seed: 1), Tanh(), try Linear(3, 1, seed: 2))
        let a = randomTensor([2, 3], seed: 1), b = randomTensor([2, 3], seed: 2)
        let v = try Tensor(shape: [2, 1], repeating: 1)

        model.zeroGrad()
        let (_, backwardA) = try model.forward(a)
        let dxA = try backwardA(v)
        let gradA = model.parameters.map(\.grad)
        model.zeroGrad()
        let (_, backwardB) = try model.forward(b)
        let dxB = try backwardB(v)
        let gradB = model.parameters.map(\.grad)

        model.zeroGrad()
        let (_, first) = try model.forward(a)
        let (_, second) = try model.forward(b)
        #expect(try second(v) == dxB)
        #expect(try first(v) == dxA)
        for (parameter, (ga, gb)) in zip(model.parameters, zip(gradA, gradB)) {
            for i in 0..<ga.count { #expect(abs(parameter.grad[i] - (ga[i] + gb[i])) <= 1e-6) }
        }
    }

    @Test func modePropagatesToEveryLayer() throws {
        let dropout = try Dropout(probability: 0.5)
        let model = Sequential(try Linear(2, 2), Residual(dropout))
        model.isTraining = false
        #expect(!dropout.isTraining)
        model.isTraining = true
        #expect(dropout.isTraining)
    }

    /// Evaluating for a while gives each module back the mode it had, not training everywhere.
    @Test func evaluatingRestoresEachModulesMode() throws {
        let (norm, dropout) = (try BatchNorm1D(2), try Dropout(probability: 0.5))
        let model = Sequential(try Linear(2, 2), norm, Residual(dropout))
        dropout.isTraining = false
        let during = model.evaluating { model.namedModules.map(\.module.isTraining) }
        #expect(during.allSatisfy { !$0 })
        #expect(model.isTraining && norm.isTraining && !dropout.isTraining)
        model.isTraining = false
        model.evaluating {}
        #expect(!model.isTraining && !norm.isTraining)
    }

    /// Names, buffers and random states come from the children, at any depth.
    @Test func namesDeriveFromChildren() throws {
        let model = try ModelSpec.build("linear(2,4) residual(batchnorm1d(4) dropout(0.5)) linear(4,1)", seed: 1)
        #expect(model.namedModules.map(\.name) == ["", "0", "1", "1.0", "1.1", "2"])
        #expect(
            model.namedParameters.map(\.name) == ["0.weight", "0.bias", "1.0.weight", "1.0.bias", "2.weight", "2.bias"])
        #expect(model.namedBuffers.map(\.name) == ["1.0.running_mean", "1.0.running_var"])
        #expect(model.namedCounters.map(\.name) == ["1.0.num_batches_tracked"])
        #expect(model.namedRandomStates.map(\.name) == ["1.1.generator"])
    }
}

@Suite struct GradientCheckTests {
    /// A module whose backward is deliberately wrong (twice the true gradient).
    final class WrongBackward: Module {
        var isTraining = true
        var description: String { "WrongBackward()" }
        func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
            let output = try Tanh()(input)
            return (
                output,
                { v in
                    try Tensor(
                        shape: input.shape, scalars: (0..<v.count).map { 2 * v[$0] * (1 - output[$0] * output[$0]) })
                }
            )
        }
    }

    @Test func aWrongBackwardFails() throws {
        let report = try GradientCheck.run(WrongBackward(), input: randomTensor([2, 3], seed: 1))
        #expect(!report.passed)
        #expect(report.description.contains("FAIL input"))
    }

    @Test func aWrongParameterGradientFails() throws {
        let layer = try Linear(3, 2, seed: 1)
        let report = try GradientCheck.run(Sequential(layer, WrongBackward()), input: randomTensor([2, 3], seed: 2))
        #expect(!report.passed)
        #expect(report.entries.map(\.passed) == [false, false, false])
    }

    @Test func theReportNamesEveryTensor() throws {
        let report = try GradientCheck.run(Sequential(try Linear(3, 2)), input: randomTensor([2, 3], seed: 2))
        #expect(report.entries.map(\.name) == ["input", "0.weight", "0.bias"])
        #expect(report.description.hasPrefix("Gradient check of Sequential(Linear(in: 3, out: 2)): passed"))
    }
}

@Suite struct InputGradientTests {
    /// Without an input gradient the backward adds exactly the same parameter gradients (the first
    /// layers' input gradients are skipped).
    @Test(arguments: [
        "relu conv2d(2,3,3,pad=1) batchnorm2d(3) residual(conv2d(3,3,3,pad=1) relu) flatten linear(48,4)",
        "residual(conv2d(2,2,3,pad=1) tanh) conv_transpose2d(2,2,2,stride=2) flatten linear(128,3)",
        "batchnorm2d(2) relu flatten linear(32,5) relu linear(5,2)",
        "flatten linear(32,5) relu linear(5,2)",
        "rows lstm(8,5,layers=2,bidirectional=1) last linear(10,3)",
    ])
    func sameParameterGradients(spec: String) throws {
        let x = randomTensor([3, 2, 4, 4], seed: 8)
        func gradients(inputGradient: Bool) throws -> [[UInt32]] {
            let model = try ModelSpec.build(spec, seed: 2)
            if inputGradient {
                let (y, backward) = try model.forward(x)
                #expect(try backward(randomTensor(y.shape, seed: 9)).shape == x.shape)
            } else {
                let (y, backward) = try model.forwardWithoutInputGradient(x)
                try backward(randomTensor(y.shape, seed: 9))
            }
            return model.parameters.map { $0.grad.scalars.map(\.bitPattern) }
        }
        #expect(try gradients(inputGradient: false) == gradients(inputGradient: true))
    }
}
