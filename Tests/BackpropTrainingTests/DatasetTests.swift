import Backprop
import BackpropTestSupport
import Foundation
import Testing

@testable import BackpropTraining

@Suite struct DatasetTests {
    /// An IDX file of unsigned bytes: magic 0 0 8 rank, big-endian dimensions, then the values.
    static func idx(_ dimensions: [Int], _ values: [UInt8]) -> [UInt8] {
        [0, 0, 8, UInt8(dimensions.count)]
            + dimensions.flatMap { d in (0..<4).map { UInt8((d >> (8 * (3 - $0))) & 0xff) } } + values
    }

    /// gzip of the labels file idx([3], [7, 1, 9]), made by Python's gzip.compress(..., mtime=0).
    static let gzippedLabels: [UInt8] = [
        31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 99, 96, 224, 96, 100, 96, 96, 96, 102, 103, 228,
        4, 0, 228, 35, 200, 107, 11, 0, 0, 0,
    ]

    static func directory(_ files: [String: [UInt8]]) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent(
            "idx-\(UInt64.random(in: 0...UInt64.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        for (name, bytes) in files { try Data(bytes).write(to: url.appendingPathComponent(name)) }
        return url
    }

    @Test func readsPlainAndGzippedFiles() throws {
        let images = Self.idx([3, 2, 2], [0, 255, 51, 102, 1, 2, 3, 4, 5, 6, 7, 8])
        let dir = try Self.directory([
            "train-images-idx3-ubyte": images, "train-labels-idx1-ubyte.gz": Self.gzippedLabels,
        ])
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try ImageDataset.load(directory: dir, prefix: "train")
        #expect(data.images.shape == [3, 1, 2, 2])
        #expect(data.labels == [7, 1, 9])
        #expect(data.images.scalars.prefix(4) == [0, 1, 0.2, 0.4])
        let (batch, labels) = data.batch([2, 0])
        #expect(batch.shape == [2, 1, 2, 2] && labels == [9, 7] && batch[0] == 5 / 255)
    }

    /// Two gzip members (Python's gzip.compress of "IDX-a" and of "bcdef", mtime 0) decompress to
    /// both: 10 bytes, not the second member's 5 (inflateReset zeroes zlib's running total).
    @Test func multiMemberGzipDecompressesWhole() throws {
        let members: [UInt8] = [
            31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 243, 116, 137, 208, 77, 4, 0, 102, 118, 135, 255, 5, 0, 0, 0,
            31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 75, 74, 78, 73, 77, 3, 0, 174, 179, 198, 255, 5, 0, 0, 0,
        ]
        #expect(try IDX.gunzip(members, name: "two members") == Array("IDX-abcdef".utf8))
    }

    @Test func badFilesGiveClearErrors() throws {
        let labels = Self.idx([3], [1, 2, 3])
        func load(_ images: [UInt8], _ labelBytes: [UInt8] = labels) throws {
            let dir = try Self.directory(["t10k-images-idx3-ubyte": images, "t10k-labels-idx1-ubyte": labelBytes])
            defer { try? FileManager.default.removeItem(at: dir) }
            _ = try ImageDataset.load(directory: dir, prefix: "t10k")
        }
        expectError(.format, mentioning: ["bad magic"]) { try load([1, 2, 3, 4]) }
        expectError(.format, mentioning: ["5 data bytes", "[3, 1, 2]", "expected 6"]) {
            try load(Self.idx([3, 1, 2], [1, 2, 3, 4, 5]))
        }
        expectError(.format, mentioning: ["truncated IDX header"]) { try load([0, 0, 8, 3, 0, 0]) }
        expectError(.format, mentioning: ["has 2 images but", "has 3 labels"]) {
            try load(Self.idx([2, 1, 1], [1, 2]))
        }
        expectError(.format, mentioning: ["images need 3 dimensions"]) { try load(Self.idx([3], [1, 2, 3])) }
        expectError(.unsupported, mentioning: ["IDX type 0xd"]) { try load([0, 0, 0x0d, 1, 0, 0, 0, 0]) }
        var corrupt = Self.gzippedLabels
        corrupt[12] ^= 0xff
        expectError(.format, mentioning: ["corrupt gzip"]) { try load(Self.idx([3, 1, 1], [1, 2, 3]), corrupt) }
        expectError(.format, mentioning: ["truncated gzip"]) {
            try load(Self.idx([3, 1, 1], [1, 2, 3]), Array(Self.gzippedLabels.prefix(22)))
        }
        expectError(.format, mentioning: ["no t10k-images-idx3-ubyte or t10k-images-idx3-ubyte.gz"]) {
            _ = try ImageDataset.load(directory: URL(fileURLWithPath: "/nonexistent"), prefix: "t10k")
        }
    }

    /// Two classes of 4x4 images, dark (label 0) and bright (label 1), with noise: a small network
    /// learns them within a few epochs.
    static func synthetic(count: Int, seed: UInt64) throws -> ImageDataset {
        var generator = SplitMix64(seed: seed)
        let labels = (0..<count).map { $0 % 2 }
        let pixels = labels.flatMap { label in
            (0..<16).map { _ in Float(label) * 0.6 + Float.random(in: 0..<0.4, using: &generator) }
        }
        return try ImageDataset(images: Tensor(shape: [count, 1, 4, 4], scalars: pixels), labels: labels)
    }

    @Test func trainingLearnsAndIsReproducible() throws {
        let data = try Self.synthetic(count: 64, seed: 1)
        func train() throws -> (Training.Metrics, [Float]) {
            let model = try ModelSpec.build("flatten linear(16,8) relu linear(8,2)", seed: 3)
            let optimizer = try Adam(parameters: model.parameters, learningRate: 0.05)
            for epoch in 0..<5 {
                _ = try Training.epoch(
                    model: model, optimizer: optimizer, data: data, batchSize: 16, seed: UInt64(epoch))
            }
            return (try Training.evaluate(model: model, data: data), model.parameters.flatMap(\.value.scalars))
        }
        let (metrics, weights) = try train()
        #expect(metrics.accuracy == 1)
        #expect(try train().1 == weights, "the same seed gives the same weights")
        // And the same bits for another thread count.
        let saved = Threads.count
        defer { Threads.count = saved }
        Threads.count = saved == 1 ? 3 : 1
        #expect(try train().1.map(\.bitPattern) == weights.map(\.bitPattern))
    }

    @Test func aDivergingLossStopsWithAClearError() throws {
        let data = try Self.synthetic(count: 32, seed: 2)
        let model = try ModelSpec.build("flatten linear(16,8) relu linear(8,2)", seed: 3)
        let optimizer = try SGD(parameters: model.parameters, learningRate: 1e30)
        expectError(.numerical, mentioning: ["Training:", "lower the learning rate"]) {
            for epoch in 0..<3 {
                _ = try Training.epoch(
                    model: model, optimizer: optimizer, data: data, batchSize: 8, seed: UInt64(epoch))
            }
        }
    }

    /// Finite loss and gradients, but an update so large that the weights overflow: the error names
    /// the layer at once.
    @Test func anOverflowingUpdateNamesItsLayer() throws {
        let data = try Self.synthetic(count: 8, seed: 2)
        let model = try ModelSpec.build("flatten linear(16,2)", seed: 3)
        let optimizer = try SGD(parameters: model.parameters, learningRate: 3e38, weightDecay: 100)
        expectError(.numerical, mentioning: ["the update at batch 1 made 1.weight", "Linear", "non-finite"]) {
            _ = try Training.epoch(model: model, optimizer: optimizer, data: data, batchSize: 8, seed: 1)
        }
    }
}
