import Foundation
import Testing

@testable import backprop

/// No work is not a success: training on no images, or evaluating on none, stops with an error.
@Suite struct EmptyDataTests {
    /// An IDX file of unsigned bytes: magic 0 0 8 rank, big-endian dimensions, then the values.
    static func idx(_ dimensions: [Int], _ values: [UInt8] = []) -> Data {
        Data(
            [0, 0, 8, UInt8(dimensions.count)]
                + dimensions.flatMap { d in (0..<4).map { UInt8((d >> (8 * (3 - $0))) & 0xff) } } + values)
    }

    /// A data directory with `train` and `test` images of 2 × 2 pixels.
    static func data(train: Int, test: Int) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("empty-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        for (prefix, count) in [("train", train), ("t10k", test)] {
            try idx([count, 2, 2], [UInt8](repeating: 7, count: 4 * count))
                .write(to: url.appendingPathComponent("\(prefix)-images-idx3-ubyte"))
            try idx([count], [UInt8](repeating: 1, count: count))
                .write(to: url.appendingPathComponent("\(prefix)-labels-idx1-ubyte"))
        }
        return url.path
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
}
