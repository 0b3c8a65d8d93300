import Backprop

/// Minibatch training and evaluation of a classifier under the mean softmax cross-entropy.
public enum Training {
    /// Loss and accuracy over a pass.
    public struct Metrics: Sendable {
        public let loss: Double
        public let accuracy: Double
        /// For a training epoch: the most bytes of tensor storage a step's forward and backward had
        /// alive at once (its activations, saved values and gradients; `TensorMemory`); else 0.
        public var peakStepBytes = 0
        /// For a data-parallel training epoch: the most bytes a step received from other processes.
        public var receivedBytesPerStep = 0

        public init(loss: Double, accuracy: Double, peakStepBytes: Int = 0, receivedBytesPerStep: Int = 0) {
            (self.loss, self.accuracy) = (loss, accuracy)
            (self.peakStepBytes, self.receivedBytesPerStep) = (peakStepBytes, receivedBytesPerStep)
        }
    }

    /// One epoch: the examples in an order shuffled from `seed`, in batches of `batchSize` (the last
    /// one smaller), each a forward, a backward from the loss, the monitor's record of the
    /// gradients, the gradient aids (penalty, clipping) and an optimizer step. The loss reported is
    /// the data loss (without the penalty). Calls
    /// `progress(batchesDone, batchCount, meanLossSoFar, accuracySoFar)` after each batch.
    /// Stops with a `.numerical` error naming the layer when the loss or a gradient stops being finite.
    ///
    /// With `parallel`, each batch runs as its micro-batches, on the processes of its group (see
    /// `DataParallel`); every process must call this with the same arguments, and gets the same
    /// weights and metrics.
    public static func epoch(
        model: Module, optimizer: Optimizer, data: ImageDataset, batchSize: Int, seed: UInt64,
        aids: GradientAids = GradientAids(), monitor: TrainingMonitor? = nil, parallel: DataParallel? = nil,
        progress: (Int, Int, Double, Double) -> Void = { _, _, _, _ in }
    ) throws -> Metrics {
        guard batchSize > 0 else { throw BackpropError(.invalidArgument, "Training: batch size must be positive") }
        try parallel?.check(batchSize: batchSize, model: model)
        model.isTraining = true
        var generator = SplitMix64(seed: seed)
        let order = Array(0..<data.count).shuffled(using: &generator)
        let batches = (data.count + batchSize - 1) / batchSize
        var lossSum = 0.0, correct = 0, seen = 0, peakStepBytes = 0, receivedBytes = 0
        for b in 0..<batches {
            let indices = order[b * batchSize..<min((b + 1) * batchSize, data.count)]
            optimizer.zeroGrad()
            let (step, peak, _) = try TensorMemory.measure { () throws -> DataParallel.StepResult in
                if let parallel, parallel.splits {
                    return try parallel.step(
                        model: model, data: data, batch: indices, place: "batch \(b + 1) of \(batches)")
                }
                return try plainStep(model: model, data: data, batch: indices, place: "batch \(b + 1) of \(batches)")
            }
            peakStepBytes = max(peakStepBytes, peak)
            receivedBytes = max(receivedBytes, step.receivedBytes)
            // The backward runs from the output: the last layer with a non-finite gradient blew up first.
            if let (name, _) = model.namedParameters.last(where: { !$0.parameter.grad.isFinite }) {
                let layer = TrainingMonitor.layerLabels(model)[TrainingMonitor.layerName(of: name)] ?? "?"
                throw BackpropError(
                    .numerical,
                    "Training: the gradient of \(name) (\(layer)) became non-finite at batch \(b + 1) "
                        + "(loss \(step.loss)); lower the learning rate or clip gradients")
            }
            try monitor?.afterBackward(model: model, loss: step.loss, learningRate: optimizer.learningRate)
            try aids.apply(to: optimizer.parameters)
            optimizer.step()
            try checkUpdate(model, at: "batch \(b + 1)")
            lossSum += step.loss * Double(step.count)
            correct += step.correct
            seen += step.count
            progress(b + 1, batches, lossSum / Double(seen), Double(correct) / Double(seen))
        }
        return Metrics(
            loss: lossSum / Double(max(seen, 1)), accuracy: Double(correct) / Double(max(seen, 1)),
            peakStepBytes: peakStepBytes, receivedBytesPerStep: receivedBytes)
    }

    /// A step's forward and backward of the whole batch at once: its gradients added into the
    /// parameters' `grad`.
    private static func plainStep(
        model: Module, data: ImageDataset, batch: ArraySlice<Int>, place: String
    ) throws -> DataParallel.StepResult {
        let (x, labels) = data.batch(batch)
        let (logits, backward) = try model.forwardWithoutInputGradient(x)
        let loss = try SoftmaxCrossEntropy()(logits, labels: labels)
        guard loss.value.isFinite else {
            throw BackpropError(
                .numerical, "Training: the loss became \(loss.value) at \(place); lower the learning rate")
        }
        try backward(loss.gradient)
        return .init(
            loss: Double(loss.value), correct: zip(predictions(logits), labels).filter { $0 == $1 }.count,
            count: labels.count, receivedBytes: 0)
    }

    /// Throws, naming the first layer whose weights the last update made NaN or infinite (an
    /// update that overflowed although the loss and the gradients were finite).
    package static func checkUpdate(_ model: Module, at place: String) throws {
        guard let (name, _) = model.namedParameters.first(where: { !$0.parameter.value.isFinite })
        else { return }
        let layer = TrainingMonitor.layerLabels(model)[TrainingMonitor.layerName(of: name)] ?? "?"
        throw BackpropError(
            .numerical,
            "Training: the update at \(place) made \(name) (\(layer)) non-finite; lower the learning rate or clip gradients"
        )
    }

    /// Loss and accuracy in evaluation mode, in batches of `batchSize`.
    public static func evaluate(model: Module, data: ImageDataset, batchSize: Int = 1000) throws -> Metrics {
        try classify(model: model, data: data, batchSize: batchSize).metrics
    }

    /// Loss, accuracy and each example's predicted class, in evaluation mode (each module's mode is
    /// restored afterwards).
    public static func classify(
        model: Module, data: ImageDataset, batchSize: Int = 1000
    ) throws -> (metrics: Metrics, predictions: [Int]) {
        try model.evaluating { try classifyInCurrentMode(model: model, data: data, batchSize: batchSize) }
    }

    private static func classifyInCurrentMode(
        model: Module, data: ImageDataset, batchSize: Int
    ) throws -> (metrics: Metrics, predictions: [Int]) {
        var lossSum = 0.0, predicted: [Int] = []
        predicted.reserveCapacity(data.count)
        for start in stride(from: 0, to: data.count, by: batchSize) {
            let (x, labels) = data.batch(start..<min(start + batchSize, data.count))
            let logits = try model(x)
            lossSum += Double(try SoftmaxCrossEntropy()(logits, labels: labels).value) * Double(labels.count)
            predicted += predictions(logits)
        }
        let correct = zip(predicted, data.labels).filter { $0 == $1 }.count
        let count = Double(max(data.count, 1))
        return (Metrics(loss: lossSum / count, accuracy: Double(correct) / count), predicted)
    }

    /// counts[true class][predicted class] over `classes` classes.
    public static func confusionMatrix(labels: [Int], predictions: [Int], classes: Int) -> [[Int]] {
        var counts = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
        for (label, predicted) in zip(labels, predictions) where label < classes && predicted < classes {
            counts[label][predicted] += 1
        }
        return counts
    }

    /// The arg-max class of each row of logits [N, C].
    public static func predictions(_ logits: Tensor) -> [Int] {
        let classes = logits.shape.last ?? 1
        return (0..<logits.count / classes).map { row in
            var best = 0
            for c in 1..<classes where logits[row * classes + c] > logits[row * classes + best] { best = c }
            return best
        }
    }
}
