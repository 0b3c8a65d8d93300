import Backprop
import BackpropTestSupport
import Testing

/// Gradient checkpointing changes no bit: the same losses, parameters, running statistics and
/// counters after several training steps, and the same random draws for dropout.
@Suite struct CheckpointingTests {
    static let spec =
        "conv2d(1,4,3,pad=1) batchnorm2d(4) relu residual(conv2d(4,4,3,pad=1) batchnorm2d(4) relu dropout(0.3)) "
        + "maxpool2d(2) flatten linear(64,16) relu dropout(0.5) linear(16,3)"

    /// Loss bits of each of `steps` Adam steps, then every parameter, buffer and counter.
    static func train(_ model: Sequential, steps: Int = 4, withoutInputGradient: Bool) throws -> [[UInt32]] {
        let optimizer = try Adam(parameters: model.parameters, learningRate: 0.01)
        var losses: [UInt32] = []
        for step in 0..<steps {
            let x = randomTensor([6, 1, 8, 8], seed: UInt64(100 + step)), labels = (0..<6).map { ($0 + step) % 3 }
            optimizer.zeroGrad()
            if withoutInputGradient {
                let (logits, backward) = try model.forwardWithoutInputGradient(x)
                let loss = try SoftmaxCrossEntropy()(logits, labels: labels)
                try backward(loss.gradient)
                losses.append(loss.value.bitPattern)
            } else {
                let (logits, backward) = try model.forward(x)
                let loss = try SoftmaxCrossEntropy()(logits, labels: labels)
                _ = try backward(loss.gradient)
                losses.append(loss.value.bitPattern)
            }
            optimizer.step()
        }
        return [losses] + model.namedParameters.map { bits($0.parameter.value.scalars) }
            + model.namedBuffers.map { bits($0.buffer.value.scalars) }
            + [model.namedCounters.map { UInt32(truncatingIfNeeded: $0.counter.value) }]
    }

    @Test(arguments: [1, 2, 3, 8])
    func segmentsGiveThePlainBits(segments: Int) throws {
        for withoutInputGradient in [false, true] {
            let plain = try Self.train(ModelSpec.build(Self.spec, seed: 3), withoutInputGradient: withoutInputGradient)
            let model = try ModelSpec.build(Self.spec, seed: 3)
            try model.checkpoint(segments: segments)
            #expect(try Self.train(model, withoutInputGradient: withoutInputGradient) == plain, "\(segments) segments")
        }
    }

    /// `checkpoint(SPEC)` nests its layers under one index (as `residual` does) and changes no bit:
    /// the same layers drawn from the same seeds train to the plain spec's values.
    @Test func theSpecsCheckpointGivesThePlainBits() throws {
        let block = "conv2d(4,4,3,pad=1) batchnorm2d(4) relu dropout(0.3)"
        let wrapped =
            "checkpoint(conv2d(1,4,3,pad=1) batchnorm2d(4) relu) residual(\(block)) maxpool2d(2) flatten "
            + "checkpoint(linear(64,16) relu dropout(0.5)) linear(16,3)"
        let plain =
            "conv2d(1,4,3,pad=1) batchnorm2d(4) relu residual(\(block)) maxpool2d(2) flatten "
            + "linear(64,16) relu dropout(0.5) linear(16,3)"
        let model = try ModelSpec.build(wrapped, seed: 3)
        #expect(model.namedParameters.map(\.name).prefix(4) == ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias"])
        #expect(
            try Self.train(model, withoutInputGradient: false)
                == Self.train(ModelSpec.build(plain, seed: 3), withoutInputGradient: false))
    }

    @Test func gradientsThroughACheckpointedSegment() throws {
        let model = try ModelSpec.build("linear(5,6) tanh checkpoint(linear(6,6) sigmoid linear(6,4)) tanh", seed: 2)
        try expectGradientsCorrect(model, input: randomTensor([3, 5], seed: 4))
        let segmented = try ModelSpec.build("linear(5,6) tanh linear(6,6) sigmoid linear(6,4) tanh", seed: 2)
        try segmented.checkpoint(segments: 2)
        try expectGradientsCorrect(segmented, input: randomTensor([3, 5], seed: 4))
    }

    /// A module whose output shape changes from one call to the next.
    final class Shifty: Module {
        var isTraining = true
        var calls = 0
        var description: String { "Shifty()" }
        func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
            calls += 1
            let output = try Tensor(shape: [calls], repeating: 1)
            return (output, { _ in input })
        }
    }

    @Test func badSettingsThrow() throws {
        let model = try ModelSpec.build("linear(2,2) relu linear(2,2)")
        expectError(.invalidArgument, mentioning: ["0 checkpoint segments for 3 layers", "expected 1 to 3"]) {
            try model.checkpoint(segments: 0)
        }
        expectError(.invalidArgument, mentioning: ["4 checkpoint segments for 3 layers"]) {
            try model.checkpoint(segments: 4)
        }
        let shifty = Checkpointed(Shifty())
        let (output, backward) = try shifty.forward(Tensor(shape: [2], repeating: 0))
        expectError(
            .shapeMismatch,
            mentioning: ["Checkpointed(Shifty())", "recomputed forward gave shape [2]", "the first [1]"]
        ) {
            _ = try backward(output)
        }
    }
}
