import Backprop
import CKernels

/// Data parallelism: how a training step splits its batch and where the pieces run.
///
/// A batch of B examples runs as S micro-batches, micro-batch j holding the batch's examples
/// [j·B/S, (j+1)·B/S), each its own forward and backward of the loss Σ/B (its share of the batch's
/// mean). Of P processes, rank r runs micro-batches [r·S/P, (r+1)·S/P). Every micro-batch's
/// parameter gradients reach every process, which sums them in one fixed tree over the micro-batch
/// index (`treeSum`): the gradients, and so the weights after any number of steps, are the same
/// bits for any process and thread count. Without sync, batch norm normalises each micro-batch with
/// its own statistics (as PyTorch does under gradient accumulation or DistributedDataParallel),
/// and its running statistics are updated once per micro-batch, in micro-batch order. With
/// `syncBatchNorm` it normalises with the statistics of the whole batch, merged in micro-batch
/// order (`BatchNorm.synchronizedForward`), so the model is the same function of the batch as
/// with S = 1 (up to rounding), and the running statistics are updated once per batch.
///
/// Each micro-batch draws its random numbers (dropout's masks) from its own streams, forked from
/// the model's generators at the start of the step; the generators then move on as one draw each.
public struct DataParallel {
    public let microBatches: Int
    public let syncBatchNorm: Bool
    public let group: ProcessGroup

    public init(microBatches: Int = 1, syncBatchNorm: Bool = false, group: ProcessGroup = SingleProcess()) throws {
        guard microBatches >= 1 else {
            throw BackpropError(.invalidArgument, "DataParallel: micro-batches must be at least 1, got \(microBatches)")
        }
        guard microBatches % group.size == 0 else {
            throw BackpropError(
                .invalidArgument,
                "DataParallel: \(microBatches) micro-batches cannot be shared equally by \(group.size) processes; "
                    + "pass a multiple of \(group.size)")
        }
        (self.microBatches, self.syncBatchNorm, self.group) = (microBatches, syncBatchNorm, group)
    }

    /// Whether a step runs as micro-batches; with one micro-batch it is a plain step, the same function.
    var splits: Bool { microBatches > 1 }

    /// This process's micro-batches.
    var localMicroBatches: Range<Int> {
        let share = microBatches / group.size
        return group.rank * share..<(group.rank + 1) * share
    }

    /// Throws unless the batch size splits into the micro-batches and, with sync batch norm, the
    /// model's batch norms are where the step can synchronise them: layers of a `Sequential` model,
    /// not inside another container or a checkpointed segment.
    public func check(batchSize: Int, model: Module) throws {
        guard batchSize % microBatches == 0 else {
            throw BackpropError(
                .invalidArgument,
                "DataParallel: a batch of \(batchSize) does not split into \(microBatches) equal micro-batches; "
                    + "pass a batch size that is a multiple of \(microBatches)")
        }
        guard syncBatchNorm, splits else { return }
        guard let network = model as? Sequential, network.checkpointSegments == nil else {
            throw BackpropError(
                .invalidArgument,
                "DataParallel: sync batch norm needs a Sequential model without checkpointed segments, got \(model)")
        }
        let top = Set(network.layers.map(ObjectIdentifier.init))
        if let (name, _) = model.namedModules.first(where: {
            $0.module is BatchNorm && !top.contains(ObjectIdentifier($0.module))
        }) {
            throw BackpropError(
                .invalidArgument,
                "DataParallel: sync batch norm synchronises the model's own layers; layer \(name) is inside a container"
            )
        }
    }

    /// What a step reports: the batch's mean loss, its correct predictions and examples, and the
    /// bytes this process received from the others.
    struct StepResult {
        var loss: Double, correct: Int, count: Int, receivedBytes: Int
    }

    /// One step's forward and backward over the micro-batches of `batch`: leaves the batch's
    /// gradients, summed in the fixed tree, in the parameters' `grad`, and the running statistics
    /// updated. `place` names the step in errors.
    /// `check(batchSize:model:)` must have passed; a batch smaller than the batch size (an epoch's
    /// last) splits as evenly as it can, and a micro-batch left without examples adds nothing.
    func step(model: Module, data: ImageDataset, batch: ArraySlice<Int>, place: String) throws -> StepResult {
        let parameters = model.parameters, local = localMicroBatches
        let layout = GradientLayout(parameters)
        var run = MicroBatchRun(
            layout: layout, slots: local.count, randomness: MicroBatchRandomness(model, microBatches: local))
        let examples = local.map { j in
            // Micro-batch j: the batch's positions [j·B/S, (j+1)·B/S).
            batch.dropFirst(j * batch.count / microBatches).prefix(
                (j + 1) * batch.count / microBatches - j * batch.count / microBatches)
        }
        model.zeroGrad()
        if syncBatchNorm {
            try run.synchronized(model as! Sequential, data, examples, batch.count, place, group)
        } else {
            try run.independent(model, data, examples, batch.count, place, group)
        }
        let (sums, gradientBytes) = try reduceInTree(run.gradients, width: layout.total)
        let scalars = try group.allGather(run.scalars)
        layout.store(sums, in: parameters)
        run.randomness.finish()
        let micro = 0..<microBatches
        return StepResult(
            loss: micro.reduce(0.0) { $0 + scalars[2 * $1] },
            correct: micro.reduce(0) { $0 + Int(scalars[2 * $1 + 1]) },
            count: batch.count,
            receivedBytes: gradientBytes + (scalars.count - run.scalars.count) * 8 + run.receivedStatisticsBytes)
    }

    /// Σ_j of every micro-batch's gradient row (this process's `rows`, S/P of `width`) in the fixed
    /// tree, on every process, and the bytes this one received. The width is cut into P chunks;
    /// each process gets every micro-batch's part of its own chunk (all-to-all), sums that in the
    /// tree, and the sums are gathered: each element is summed in the same tree as one process
    /// would, and each process receives 2 (P − 1) / P rows' worth for S = P (an allreduce's bytes).
    func reduceInTree(_ rows: [Float], width: Int) throws -> (sums: [Float], receivedBytes: Int) {
        let processes = group.size, local = microBatches / processes
        guard processes > 1 else { return (Self.treeSum(rows, parts: microBatches, width: width), 0) }
        let bounds = (0...processes).map { $0 * width / processes }
        let chunk = (0..<processes).map { bounds[$0 + 1] - bounds[$0] }, mine = chunk[group.rank]
        var send: [Float] = []
        send.reserveCapacity(rows.count)
        for destination in 0..<processes {
            for row in 0..<local {
                send += rows[row * width + bounds[destination]..<row * width + bounds[destination + 1]]
            }
        }
        let parts = try group.exchange(
            send, sendCounts: chunk.map { local * $0 }, receiveCounts: Array(repeating: local * mine, count: processes))
        let sums = try group.allGather(
            Self.treeSum(parts, parts: microBatches, width: mine), counts: chunk)
        return (sums, (parts.count - local * mine + width - mine) * 4)
    }

    /// Σ_j parts[j] over `parts` rows of `width` in a fixed pairwise tree:
    /// sum(lo, hi) = sum(lo, mid) + sum(mid, hi) with mid = (lo + hi) / 2, element by element.
    static func treeSum(_ all: [Float], parts: Int, width: Int) -> [Float] {
        func sum(_ lo: Int, _ hi: Int) -> [Float] {
            if hi - lo == 1 { return Array(all[lo * width..<hi * width]) }
            var left = sum(lo, (lo + hi) / 2)
            let right = sum((lo + hi) / 2, hi)
            left.withUnsafeMutableBufferPointer { l in
                right.withUnsafeBufferPointer { r in bp_add_inplace(l.baseAddress!, r.baseAddress!, Int64(width)) }
            }
            return left
        }
        return width == 0 ? [] : sum(0, parts)
    }
}

/// Where each parameter's gradient sits in one flat row of all of them (the parameters' order).
struct GradientLayout {
    let offsets: [ObjectIdentifier: Int]
    let total: Int

    init(_ parameters: [Parameter]) {
        var offsets: [ObjectIdentifier: Int] = [:], total = 0
        for parameter in parameters where offsets[ObjectIdentifier(parameter)] == nil {
            offsets[ObjectIdentifier(parameter)] = total
            total += parameter.value.count
        }
        (self.offsets, self.total) = (offsets, total)
    }

    /// Adds the parameters' gradients into `row` (slot `slot` of rows of `total`) and clears them.
    func collect(_ parameters: [Parameter], into rows: inout [Float], slot: Int) {
        rows.withUnsafeMutableBufferPointer { rows in
            for parameter in parameters {
                let start = rows.baseAddress! + slot * total + offsets[ObjectIdentifier(parameter)]!
                parameter.grad.withPointer { bp_add_inplace(start, $0, Int64(parameter.grad.count)) }
                parameter.zeroGrad()
            }
        }
    }

    /// Sets each parameter's gradient to its part of `row`.
    func store(_ row: [Float], in parameters: [Parameter]) {
        for parameter in parameters {
            let start = offsets[ObjectIdentifier(parameter)]!
            parameter.grad = Tensor(
                unchecked: parameter.value.shape, scalars: Array(row[start..<start + parameter.value.count]))
        }
    }
}

/// Each of this process's micro-batches' own random streams: at the start of a step every
/// generator draws one number b, and micro-batch j's stream starts from SplitMix64(b + j)'s first
/// draw, whichever process runs it.
struct MicroBatchRandomness {
    private let states: [RandomState]
    private var streams: [[SplitMix64]]
    private let after: [SplitMix64]

    init(_ model: Module, microBatches: Range<Int>) {
        states = model.namedRandomStates.map(\.state)
        var after: [SplitMix64] = [], bases: [UInt64] = []
        for state in states {
            var generator = state.generator
            bases.append(generator.next())
            after.append(generator)
        }
        self.after = after
        streams = microBatches.map { j in
            bases.map { base in
                var fork = SplitMix64(seed: base &+ UInt64(j))
                return SplitMix64(seed: fork.next())
            }
        }
    }

    /// Runs `body` with the generators on local micro-batch `slot`'s streams.
    mutating func run<R>(_ slot: Int, _ body: () throws -> R) rethrows -> R {
        for (state, stream) in zip(states, streams[slot]) { state.generator = stream }
        defer { streams[slot] = states.map(\.generator) }
        return try body()
    }

    /// Moves the generators on past the step.
    func finish() {
        for (state, generator) in zip(states, after) { state.generator = generator }
    }
}

/// One step's micro-batches on this process: their gradients, one row per local micro-batch, and
/// their loss shares and correct counts.
struct MicroBatchRun {
    let layout: GradientLayout
    var randomness: MicroBatchRandomness
    var gradients: [Float]
    /// [slot]: the micro-batch's loss Σ/B, its correct predictions.
    var scalars: [Double]
    var receivedStatisticsBytes = 0

    init(layout: GradientLayout, slots: Int, randomness: MicroBatchRandomness) {
        (self.layout, self.randomness) = (layout, randomness)
        gradients = [Float](repeating: 0, count: slots * layout.total)
        scalars = [Double](repeating: 0, count: slots * 2)
    }

    /// The loss of a micro-batch's logits as its share of the batch's mean, recorded in its slot.
    mutating func loss(_ logits: Tensor, _ labels: [Int], slot: Int, batchSize: Int, place: String) throws -> Tensor {
        let loss = try SoftmaxCrossEntropy(divisor: batchSize)(logits, labels: labels)
        guard loss.value.isFinite else {
            throw BackpropError(
                .numerical, "Training: the loss became \(loss.value) at \(place); lower the learning rate")
        }
        scalars[2 * slot] = Double(loss.value)
        scalars[2 * slot + 1] = Double(zip(Training.predictions(logits), labels).filter { $0 == $1 }.count)
        return loss.gradient
    }

    /// Each micro-batch through the whole model on its own, batch norms keeping their moments for
    /// the running statistics' updates, which then run in micro-batch order over every process's.
    mutating func independent(
        _ model: Module, _ data: ImageDataset, _ examples: [ArraySlice<Int>], _ batchSize: Int, _ place: String,
        _ group: ProcessGroup
    ) throws {
        let norms = model.namedModules.compactMap { $0.module as? BatchNorm }.filter { $0.runningMean != nil }
        for norm in norms { norm.defersRunningUpdate = true }
        defer { for norm in norms { norm.defersRunningUpdate = false } }
        let width = norms.reduce(0) { $0 + 3 * $1.numFeatures }
        var moments = [Double](repeating: 0, count: examples.count * width)
        let parameters = model.parameters
        for (slot, indices) in examples.enumerated() where !indices.isEmpty {
            let (x, labels) = data.batch(indices)
            let (logits, backward) = try randomness.run(slot) { try model.forwardWithoutInputGradient(x) }
            try backward(try loss(logits, labels, slot: slot, batchSize: batchSize, place: place))
            layout.collect(parameters, into: &gradients, slot: slot)
            var offset = slot * width
            for norm in norms {
                moments.replaceSubrange(offset..<offset + norm.deferredMoments.count, with: norm.deferredMoments)
                offset += 3 * norm.numFeatures
            }
        }
        let all = try group.allGather(moments)
        receivedStatisticsBytes += (all.count - moments.count) * 8
        for start in stride(from: 0, to: all.count, by: max(width, 1)) where width > 0 {
            var offset = start
            for norm in norms {
                norm.updateRunningStatistics(with: all[offset..<offset + 3 * norm.numFeatures])
                offset += 3 * norm.numFeatures
            }
        }
    }

    /// The micro-batches layer by layer together, so that each batch norm normalises them with the
    /// statistics of the whole batch; the backward runs layer by layer in reverse, collecting
    /// each micro-batch's parameter gradients apart.
    mutating func synchronized(
        _ network: Sequential, _ data: ImageDataset, _ examples: [ArraySlice<Int>], _ batchSize: Int,
        _ place: String, _ group: ProcessGroup
    ) throws {
        let active = examples.indices.filter { !examples[$0].isEmpty }
        let slots = examples.count
        var receivedBytes = 0
        // Every process contributes a row per local micro-batch, zeros for one without examples.
        let gather: MicroBatchGather = { values, width in
            var rows = [Double](repeating: 0, count: slots * width)
            for (k, slot) in active.enumerated() {
                rows.replaceSubrange(slot * width..<(slot + 1) * width, with: values[k * width..<(k + 1) * width])
            }
            let all = try group.allGather(rows)
            receivedBytes += (all.count - rows.count) * 8
            return all
        }
        var inputs = active.map { data.batch(examples[$0]) }
        var xs = inputs.map(\.images)
        var backwards: [(parameters: [Parameter], backward: MicroBatchBackward)] = []
        let layers = network.layers, first = layers.firstIndex(where: \.hasParameters) ?? layers.count
        var index = 0
        while index < layers.count {
            let layer = layers[index]
            if let norm = layer as? BatchNorm, norm.isTraining {
                let relu = index + 1 < layers.count && layers[index + 1] is ReLU
                let (outputs, backward) = try norm.synchronizedForward(xs, fusingReLU: relu, gather: gather)
                (xs, index) = (outputs, index + (relu ? 2 : 1))
                backwards.append((norm.parameters, backward))
                continue
            }
            if index < first {
                xs = try xs.indices.map { k in try randomness.run(active[k]) { try layer(xs[k]) } }
            } else if index == first {
                let steps = try xs.indices.map { k in
                    try randomness.run(active[k]) { try layer.forwardWithoutInputGradient(xs[k]) }
                }
                xs = steps.map(\.output)
                backwards.append(
                    (
                        layer.parameters,
                        { gradOutputs, collect in
                            for (k, gradOutput) in gradOutputs.enumerated() {
                                try steps[k].backward(gradOutput)
                                try collect(k)
                            }
                            return []
                        }
                    ))
            } else {
                let steps = try xs.indices.map { k in try randomness.run(active[k]) { try layer.forward(xs[k]) } }
                xs = steps.map(\.output)
                backwards.append(
                    (
                        layer.parameters,
                        { gradOutputs, collect in
                            try gradOutputs.enumerated().map { k, gradOutput in
                                let gradInput = try steps[k].backward(gradOutput)
                                try collect(k)
                                return gradInput
                            }
                        }
                    ))
            }
            index += 1
        }
        var gradients = try xs.indices.map { k in
            try loss(xs[k], inputs[k].labels, slot: active[k], batchSize: batchSize, place: place)
        }
        inputs = []
        for (parameters, backward) in backwards.reversed() {
            gradients = try backward(gradients) { k in
                layout.collect(parameters, into: &self.gradients, slot: active[k])
            }
        }
        receivedStatisticsBytes += receivedBytes
    }
}
