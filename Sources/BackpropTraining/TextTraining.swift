import Backprop
import Foundation

/// What a language model's training run records: per update its loss, learning rate and each
/// layer's gradient norm (`training`), the validation loss at intervals, and at a few points of
/// training how far back in an update the gradient reaches.
public struct TextHistory: Codable, Sendable, Equatable {
    /// ‖∂J_T/∂x_t‖ for t = 0 ..< T: the loss at an update's last step T against the input of the
    /// first recurrent layer at step t, measured after update `step`.
    public struct Reach: Codable, Sendable, Equatable {
        public let step: Int
        public let norms: [Double]
    }

    public var training = TrainingHistory()
    /// Validation loss in nats per character.
    public var validation: [TrainingHistory.Point] = []
    public var reach: [Reach] = []

    public init() {}
}

/// Truncated backpropagation through time on a token stream: each update runs `streams.steps`
/// tokens of every stream from the state the previous update ended in (without its gradient),
/// then a backward from the mean cross-entropy of the next tokens, the gradient clipped to a norm,
/// and an optimizer step. `states` and `updatesDone` are all a resumed run needs beyond the
/// model and optimizer.
public final class TextTrainer {
    public let model: CharacterModel
    public let optimizer: Optimizer
    public let streams: TokenStreams
    public let aids: GradientAids
    public let monitor: TrainingMonitor
    public private(set) var updatesDone: Int
    /// The recurrent layers' final states after the last update, carried into the next.
    public private(set) var states: [RecurrentState]
    public private(set) var validation: [TrainingHistory.Point]
    public private(set) var reach: [TextHistory.Reach]

    public init(
        model: CharacterModel, optimizer: Optimizer, streams: TokenStreams, clipNorm: Float?,
        history: TextHistory = TextHistory(), updatesDone: Int = 0, states: [RecurrentState] = []
    ) {
        (self.model, self.optimizer, self.streams, self.updatesDone, self.states) = (
            model, optimizer, streams, updatesDone, states
        )
        aids = GradientAids(clipNorm: clipNorm)
        (validation, reach) = (history.validation, history.reach)
        let probe = streams.window(at: 0).input
        monitor = TrainingMonitor(
            probeBatch: Tensor(unchecked: [1, probe.shape[1]], scalars: Array(probe.scalars.prefix(probe.shape[1]))),
            probeInterval: 100, history: history.training)
    }

    public var history: TextHistory {
        var history = TextHistory()
        (history.training, history.validation, history.reach) = (monitor.history, validation, reach)
        return history
    }

    /// One update; returns its loss (nats per character). A pass over the streams starts from zero state.
    @discardableResult
    public func update() throws -> Double {
        if streams.startsPass(updatesDone) { states = [] }
        let (input, targets) = streams.batch(updatesDone)
        model.network.isTraining = true
        optimizer.zeroGrad()
        let (logits, finals, backward) = try model.network.forward(input, states: states.map(Optional.some))
        let (loss, lossBackward) = try SoftmaxCrossEntropy().forward(logits, labels: targets)
        guard loss.isFinite else {
            throw BackpropError(
                .numerical, "train-text: the loss became \(loss) at update \(updatesDone + 1); lower the learning rate")
        }
        _ = try backward(lossBackward())
        try monitor.afterBackward(model: model.network, loss: Double(loss), learningRate: optimizer.learningRate)
        try aids.apply(to: optimizer.parameters)
        optimizer.step()
        try Training.checkUpdate(model.network, at: "update \(updatesDone + 1)")
        (states, updatesDone) = (finals, updatesDone + 1)
        return Double(loss)
    }

    /// The mean cross-entropy (nats per character) of `tokens` in evaluation mode, read as the
    /// training data is: `streams.batch` contiguous streams (fewer when the text is short), windows
    /// of `streams.steps` with the state carried. Records it at the current update.
    @discardableResult
    public func validate(_ tokens: [Int32]) throws -> Double {
        let steps = streams.steps, batch = min(streams.batch, max(1, tokens.count / (steps + 2)))
        let held = try TokenStreams(tokens, batch: batch, steps: steps, source: "the validation text")
        var total = 0.0, count = 0
        try model.network.evaluating {
            var state: [RecurrentState?] = []
            for offset in stride(from: 0, to: held.length - 1 - steps, by: steps) {
                let (input, targets) = held.window(at: offset)
                let (logits, finals, _) = try model.network.forward(input, states: state)
                total += Double(try SoftmaxCrossEntropy()(logits, labels: targets).value) * Double(targets.count)
                (state, count) = (finals.map(Optional.some), count + targets.count)
            }
        }
        let loss = total / Double(max(count, 1))
        validation.append(.init(step: updatesDone, value: loss))
        return loss
    }

    /// Records how far back the gradient reaches: from zero state on the current update's window,
    /// in evaluation mode, the norm over the batch of ∂J_T/∂x_t, J_T the loss at the last step and
    /// x_t the first recurrent layer's input at step t. Adds into the parameters' gradients, which
    /// the next update clears.
    public func measureReach() throws {
        let layers = model.network.layers
        guard let first = layers.firstIndex(where: { $0 is RecurrentLayer }) else { return }
        let (input, targets) = streams.batch(updatesDone)
        let (n, t) = (input.shape[0], input.shape[1])
        let norms: [Double] = try model.network.evaluating {
            let (logits, _, backward) = try model.network.forward(input, states: [])
            let (_, lossBackward) = try SoftmaxCrossEntropy().forward(logits, labels: targets)
            let full = lossBackward(), classes = full.shape.last ?? 1
            // Only the last step's rows of each stream keep their gradient.
            var scalars = [Float](repeating: 0, count: full.count)
            for b in 0..<n {
                let row = (b * t + t - 1) * classes
                scalars.replaceSubrange(row..<row + classes, with: full.scalars[row..<row + classes])
            }
            let gradient = try backward(Tensor(shape: full.shape, scalars: scalars))[first]
            let features = gradient.count / (n * t)
            return (0..<t).map { s in
                var sum = 0.0
                for b in 0..<n {
                    for f in 0..<features { sum += Double(gradient[(b * t + s) * features + f]).squared }
                }
                return sum.squareRoot()
            }
        }
        reach.append(.init(step: updatesDone, norms: norms))
    }

    // MARK: - Checkpoints

    /// The run in one file (see `TrainingCheckpoint`): model, optimizer, carried states
    /// ("carried.<i>.h", ".c" for recurrent layer i), and in the metadata the model spec, the
    /// vocabulary, the updates done and the history, with `extra` (the run's settings).
    public func save(to url: URL, metadata extra: [String: String] = [:]) throws {
        var carried: [String: StoredArray] = [:]
        for (index, state) in states.enumerated() {
            carried["\(index).h"] = StoredArray(state.h)
            if let c = state.c { carried["\(index).c"] = StoredArray(c) }
        }
        var metadata = model.metadata.merging(extra) { $1 }
        metadata["updates_done"] = String(updatesDone)
        metadata["history"] = String(decoding: try JSONEncoder().encode(history), as: UTF8.self)
        try TrainingCheckpoint.write(
            model: model.network, optimizer: optimizer, carried: carried, metadata: metadata, to: url)
    }

    /// What `save` wrote, loaded into `model` and `optimizer` (which must be those the file's run
    /// had: the same spec, vocabulary and optimizer kind).
    public static func resume(
        _ file: SafeTensors.File, source: String, model: CharacterModel, optimizer: Optimizer
    ) throws -> (updatesDone: Int, states: [RecurrentState], history: TextHistory) {
        let vocabulary = try CharacterModel.vocabulary(in: file.metadata, source: source)
        guard vocabulary == model.vocabulary else {
            throw BackpropError(
                .invalidArgument,
                "\(source): the model's vocabulary (\(vocabulary.count) bytes) differs from the corpus's "
                    + "(\(model.vocabulary.count) bytes); resume on the corpus it was trained on")
        }
        guard let done = file.metadata["updates_done"].flatMap(Int.init), let text = file.metadata["history"],
            let history = try? JSONDecoder().decode(TextHistory.self, from: Data(text.utf8))
        else {
            throw BackpropError(.format, "\(source): not a train-text checkpoint (no updates_done or history)")
        }
        guard done >= 0 else { throw BackpropError(.format, "\(source): updates_done is \(done), expected 0 or more") }
        let carried = try TrainingCheckpoint.restore(file, source: source, model: model.network, optimizer: optimizer)
        let layers = model.network.recurrentLayers
        let states: [RecurrentState] = try (0..<(carried.isEmpty ? 0 : layers.count)).map { index in
            guard let h = carried["\(index).h"] else {
                throw BackpropError(.format, "\(source): carried.\(index).h is missing")
            }
            return RecurrentState(h: h.tensor, c: carried["\(index).c"]?.tensor)
        }
        return (done, states, history)
    }
}

extension Double {
    fileprivate var squared: Double { self * self }
}
