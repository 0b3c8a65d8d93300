import Foundation
import Testing

@testable import backprop

/// Runs that cannot do what they are asked stop at once with a one-line error: no images to train
/// or test on, images or labels the model cannot take, an output directory that cannot be made.
@Suite struct BadRunTests {
    /// An IDX file of unsigned bytes: magic 0 0 8 rank, big-endian dimensions, then the values.
    static func idx(_ dimensions: [Int], _ values: [UInt8] = []) -> Data {
        Data(
            [0, 0, 8, UInt8(dimensions.count)]
                + dimensions.flatMap { d in (0..<4).map { UInt8((d >> (8 * (3 - $0))) & 0xff) } } + values)
    }

    /// A data directory with `train` and `test` images of 2 × 2 pixels, labelled 1 (the test
    /// images `testLabel`).
    static func data(train: Int, test: Int, testLabel: UInt8 = 1) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("empty-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        for (prefix, count) in [("train", train), ("t10k", test)] {
            try idx([count, 2, 2], [UInt8](repeating: 7, count: 4 * count))
                .write(to: url.appendingPathComponent("\(prefix)-images-idx3-ubyte"))
            try idx([count], [UInt8](repeating: prefix == "t10k" ? testLabel : 1, count: count))
                .write(to: url.appendingPathComponent("\(prefix)-labels-idx1-ubyte"))
        }
        return url.path
    }

    @Test func aBatchThatDoesNotSplitIntoTheMicroBatchesIsRefused() throws {
        let data = try Self.data(train: 8, test: 3)
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("out-\(UUID().uuidString)").path
        let train = try Train.parse([
            "--data", data, "--model", "flatten linear(4,2)", "--output", output, "--batch-size", "6",
            "--micro-batches", "4",
        ])
        do {
            try train.run()
            Issue.record("a batch of 6 in 4 micro-batches was accepted")
        } catch {
            #expect(Train.message(for: error).contains("--batch-size 6 does not split into 4 equal micro-batches"))
        }
    }

    @Test func trainingOnNoImagesIsRefused() throws {
        let data = try Self.data(train: 0, test: 3)
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("out-\(UUID().uuidString)").path
        let train = try Train.parse(["--data", data, "--model", "flatten linear(4,2)", "--output", output])
        do {
            try train.run()
            Issue.record("training on no images was accepted")
        } catch {
            #expect(Train.message(for: error).contains("no training images"))
        }
    }

    /// `eval` (and `train`, which tests every epoch) read the data through DataOptions.
    @Test func anEmptyTestSetIsRefused() throws {
        let data = try Self.data(train: 3, test: 0)
        do {
            _ = try DataOptions.parse(["--data", data]).load()
            Issue.record("an empty test set was accepted")
        } catch {
            #expect(Eval.message(for: error).contains("the test set (t10k-*) has no images"))
        }
    }

    /// What would fail only after an epoch of training fails before it.
    @Test(arguments: [
        ("flatten linear(4,2)", UInt8(5), "test label 5 (example 0) is outside the model's 2 classes"),
        ("flatten linear(9,2)", UInt8(1), "the model cannot take the training images"),
    ])
    func mismatchesStopTheRunBeforeTraining(model: String, testLabel: UInt8, message: String) throws {
        let data = try Self.data(train: 4, test: 2, testLabel: testLabel)
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("early-\(UUID().uuidString)").path
        do {
            try Train.parse(["--data", data, "--model", model, "--output", output]).run()
            Issue.record("the mismatch was not found")
        } catch {
            #expect(Train.message(for: error).contains(message), "\(Train.message(for: error))")
        }
        #expect(!FileManager.default.fileExists(atPath: output + "/model.safetensors"), "no epoch ran")
    }

    @Test func anOutputThatCannotBeCreatedIsNamed() {
        do {
            _ = try prepareOutput("/dev/null/run")
            Issue.record("a directory under /dev/null was accepted")
        } catch {
            #expect(Train.message(for: error).contains("--output /dev/null/run: cannot create the directory"))
        }
    }
}
