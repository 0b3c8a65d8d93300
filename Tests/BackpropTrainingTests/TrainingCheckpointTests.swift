import Backprop
import BackpropTestSupport
import BackpropTraining
import Foundation
import Testing

@Suite struct TrainingCheckpointTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
        "backprop-training-checkpoint-\(UUID().uuidString)")

    init() throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    /// With dropout the resumed run also draws the same masks: the checkpoint carries where the
    /// dropout's generator stands (the resumed model is built from another seed).
    @Test(arguments: [
        "conv2d(1,2,3,pad=1) batchnorm2d(2) relu flatten linear(32,2)",
        "conv2d(1,2,3,pad=1) batchnorm2d(2) relu dropout(0.3) flatten linear(32,2)",
    ])
    func aTrainingRunResumedFromItsCheckpointMatchesOneThatWasNot(spec: String) throws {
        let data = try DatasetTests.synthetic(count: 48, seed: 4)
        func epochs(_ model: Sequential, _ optimizer: Optimizer, _ range: Range<Int>) throws {
            for epoch in range {
                _ = try Training.epoch(
                    model: model, optimizer: optimizer, data: data, batchSize: 16, seed: UInt64(epoch))
            }
        }
        let straight = try ModelSpec.build(spec, seed: 3)
        try epochs(straight, try Adam(parameters: straight.parameters, learningRate: 0.01), 0..<3)

        let interrupted = try ModelSpec.build(spec, seed: 3)
        let optimizer = try Adam(parameters: interrupted.parameters, learningRate: 0.01)
        try epochs(interrupted, optimizer, 0..<2)
        var history = TrainingHistory()
        history.settings = [["model", spec]]
        let url = directory.appendingPathComponent("checkpoint.safetensors")
        try TrainingCheckpoint.save(
            model: interrupted, optimizer: optimizer, history: history, epochsDone: 2,
            metadata: ["model": spec], to: url)

        let resumed = try ModelSpec.build(spec, seed: 11)
        let fresh = try Adam(parameters: resumed.parameters, learningRate: 0.01)
        let saved = try TrainingCheckpoint.load(from: url, model: resumed, optimizer: fresh)
        #expect(saved.epochsDone == 2 && saved.history == history && saved.metadata["model"] == spec)
        try epochs(resumed, fresh, 2..<3)
        #expect(
            Checkpoint.stateDict(of: resumed) == Checkpoint.stateDict(of: straight),
            "bit-identical parameters, buffers and counters")

        expectError(.invalidArgument, mentioning: ["saved with optimizer Adam", "SGD"]) {
            _ = try TrainingCheckpoint.load(
                from: url, model: resumed, optimizer: try SGD(parameters: resumed.parameters, learningRate: 0.1))
        }
    }

    @Test func aNegativeEpochCountIsRefused() throws {
        let model = try ModelSpec.build("linear(2,2)", seed: 1)
        let optimizer = try Adam(parameters: model.parameters)
        let url = directory.appendingPathComponent("negative.safetensors")
        try TrainingCheckpoint.save(
            model: model, optimizer: optimizer, history: TrainingHistory(), epochsDone: -1, metadata: [:], to: url)
        expectError(.format, mentioning: ["negative.safetensors", "epochs_done is -1"]) {
            _ = try TrainingCheckpoint.load(from: url, model: model, optimizer: optimizer)
        }
    }
}
