import Backprop
import BackpropTestSupport
import Foundation
import Testing

@testable import BackpropTraining

/// Micro-batches in one process: the same bits for any thread count, the batch's gradients summed
/// in the fixed tree, running statistics updated in micro-batch order, synchronized batch norm the
/// same function of the batch as one batch; bad splits refused. (Several processes: Tests/MPI.)
@Suite struct DataParallelTests {
    static let convSpec =
        "conv2d(1,3,3,pad=1) batchnorm2d(3) relu maxpool2d(2) flatten linear(12,6) batchnorm1d(6) relu linear(6,2)"

    /// A group that says it has `size` processes, for the checks made before anything is gathered.
    final class PretendGroup: ProcessGroup {
        let size: Int
        init(size: Int) { self.size = size }
        var rank: Int { 0 }
        func allGather(_ local: [Double]) -> [Double] { local }
        func allGather(_ local: [Float], counts: [Int]) -> [Float] { local }
        func exchange(_ send: [Float], sendCounts: [Int], receiveCounts: [Int]) -> [Float] { send }
        func abort(_ code: Int32) -> Never { fatalError("abort \(code)") }
        func finish() {}
    }

    @Test func treeSumAddsInAFixedPairwiseOrder() throws {
        // Float addition is not associative here: 1e8 + 1 rounds back to 1e8.
        let parts: [[Float]] = [[1e8, 1], [1, 2], [-1e8, 3], [1, 4]]
        let four = DataParallel.treeSum(parts.flatMap { $0 }, parts: 4, width: 2)
        #expect(four == [(parts[0][0] + parts[1][0]) + (parts[2][0] + parts[3][0]), 10])
        let three = DataParallel.treeSum(parts.prefix(3).flatMap { $0 }, parts: 3, width: 2)
        #expect(three == [parts[0][0] + (parts[1][0] + parts[2][0]), 6])
        #expect(four[0] == 0 && three[0] == 0, "the tree's order, not the sequential one (which gives 1 and 1)")
    }

    /// One epoch of S = 4 micro-batches at several thread counts; the state dicts must agree bit for bit.
    @Test(arguments: [
        convSpec, "flatten linear(16,12) relu dropout(0.3) linear(12,6) batchnorm1d(6) relu dropout(0.2) linear(6,2)",
    ])
    func microBatchesGiveTheSameBitsForAnyThreadCount(spec: String) throws {
        let data = try DatasetTests.synthetic(count: 72, seed: 5)
        for sync in [false, true] {
            let states = try [1, 2, 3].map { threads in
                try withThreads(threads) {
                    let model = try ModelSpec.build(spec, seed: 2)
                    let optimizer = try Adam(parameters: model.parameters, learningRate: 0.01)
                    _ = try Training.epoch(
                        model: model, optimizer: optimizer, data: data, batchSize: 16, seed: 1,
                        parallel: try DataParallel(microBatches: 4, syncBatchNorm: sync))
                    return Checkpoint.stateDict(of: model)
                }
            }
            #expect(states[0] == states[1] && states[0] == states[2], "sync \(sync): the same bits for 1, 2, 3 threads")
        }
    }

    /// Without sync, a step's gradient is the tree sum of the micro-batches' own gradients, and the
    /// running statistics are those of the micro-batches' forwards one after the other.
    @Test func independentMicroBatchesAreEachTheirOwnForwardAndBackward() throws {
        let data = try DatasetTests.synthetic(count: 32, seed: 7)
        let batch = Array(0..<32)[...]
        let model = try ModelSpec.build(Self.convSpec, seed: 4)
        let reference = try ModelSpec.build(Self.convSpec, seed: 4)
        let parallel = try DataParallel(microBatches: 4)
        let step = try parallel.step(model: model, data: data, batch: batch, place: "test")

        var rows: [Float] = [], loss = 0.0
        for j in 0..<4 {
            reference.zeroGrad()
            let (x, labels) = data.batch(batch[j * 8..<(j + 1) * 8])
            let (logits, backward) = try reference.forwardWithoutInputGradient(x)
            let output = try SoftmaxCrossEntropy(divisor: 32)(logits, labels: labels)
            try backward(output.gradient)
            rows += reference.parameters.flatMap(\.grad.scalars)
            loss += Double(output.value)
        }
        let expected = DataParallel.treeSum(rows, parts: 4, width: rows.count / 4)
        #expect(model.parameters.flatMap(\.grad.scalars) == expected)
        #expect(step.loss == loss && step.count == 32)
        #expect(model.namedBuffers.map(\.buffer.value) == reference.namedBuffers.map(\.buffer.value))
        #expect(model.namedCounters.map(\.counter.value) == [4, 4], "one update per micro-batch")
    }

    /// With sync, S micro-batches give the loss, gradients and running statistics of one batch, up
    /// to rounding: the statistics are merged in another order.
    @Test func synchronizedBatchNormIsTheSameFunctionAsOneBatch() throws {
        let data = try DatasetTests.synthetic(count: 48, seed: 9)
        let batch = Array(0..<48)[...]
        var largest = 0.0
        for microBatches in [2, 4, 8] {
            let model = try ModelSpec.build(Self.convSpec, seed: 6)
            let whole = try ModelSpec.build(Self.convSpec, seed: 6)
            let parallel = try DataParallel(microBatches: microBatches, syncBatchNorm: true)
            let step = try parallel.step(model: model, data: data, batch: batch, place: "test")

            let (x, labels) = data.batch(batch)
            let (logits, backward) = try whole.forwardWithoutInputGradient(x)
            let output = try SoftmaxCrossEntropy()(logits, labels: labels)
            try backward(output.gradient)

            #expect(abs(step.loss - Double(output.value)) <= 1e-6 * abs(Double(output.value)))
            // Relative to the largest gradient element: the biases before a batch norm have a zero
            // gradient in exact arithmetic, so any rounding is large relative to their own.
            let scale = whole.parameters.flatMap(\.grad.scalars).map { abs(Double($0)) }.max() ?? 0
            for (ours, theirs) in zip(model.namedParameters, whole.namedParameters) {
                let difference =
                    zip(ours.parameter.grad.scalars, theirs.parameter.grad.scalars)
                    .map { abs(Double($0) - Double($1)) }.max() ?? 0
                largest = max(largest, difference / max(scale, 1e-30))
                #expect(difference <= 1e-5 * scale, "S = \(microBatches): gradient of \(ours.name)")
            }
            for (ours, theirs) in zip(model.namedBuffers, whole.namedBuffers) {
                for (a, b) in zip(ours.buffer.value.scalars, theirs.buffer.value.scalars) {
                    #expect(abs(a - b) <= 1e-6 * max(abs(b), 1), "S = \(microBatches): \(ours.name)")
                }
            }
            #expect(model.namedCounters.map(\.counter.value) == [1, 1], "one update per batch")
        }
        print(
            "synchronized batch norm: largest gradient difference from one batch, relative to the largest gradient: \(largest)"
        )
    }

    @Test func badSplitsAreRefused() throws {
        expectError(.invalidArgument, mentioning: ["3 micro-batches", "2 processes"]) {
            _ = try DataParallel(microBatches: 3, group: PretendGroup(size: 2))
        }
        expectError(.invalidArgument, mentioning: ["at least 1"]) { _ = try DataParallel(microBatches: 0) }
        let model = try ModelSpec.build(Self.convSpec, seed: 1)
        expectError(.invalidArgument, mentioning: ["batch of 10", "4 equal micro-batches"]) {
            try DataParallel(microBatches: 4).check(batchSize: 10, model: model)
        }
        let nested = try ModelSpec.build("residual(conv2d(1,1,3,pad=1) batchnorm2d(1)) flatten linear(16,2)", seed: 1)
        expectError(.invalidArgument, mentioning: ["inside a container"]) {
            try DataParallel(microBatches: 2, syncBatchNorm: true).check(batchSize: 8, model: nested)
        }
        try DataParallel(microBatches: 2).check(batchSize: 8, model: nested)
    }
}
