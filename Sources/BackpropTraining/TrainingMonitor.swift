import Backprop
import CKernels

/// What a training run records for its report. Codable, so a checkpoint can carry it to a resumed run.
public struct TrainingHistory: Codable, Sendable, Equatable {
    /// A value at a training step (steps count from 1 across epochs).
    public struct Point: Codable, Sendable, Equatable {
        public let step: Int
        public let value: Double
    }

    /// A named line of points: one layer's gradient norm, one ReLU's dead fraction.
    public struct Series: Codable, Sendable, Equatable {
        public let name: String
        public var points: [Point]
    }

    /// Loss and accuracy after an epoch, on the training set (the running mean over its batches),
    /// the test set and, when one is held out, the validation set.
    public struct Epoch: Codable, Sendable, Equatable {
        public let epoch: Int
        public let step: Int
        public let trainLoss: Double, trainAccuracy: Double
        public let testLoss: Double, testAccuracy: Double
        public let validationLoss: Double?, validationAccuracy: Double?
        public let seconds: Double
        public let learningRate: Double
        /// The most tensor storage a training step had alive, and the process's peak resident memory
        /// at the end of the epoch, in bytes (nil in histories from before they were recorded).
        public let peakStepBytes: Int?
        public let peakResidentBytes: Int?

        public init(
            epoch: Int, step: Int, train: Training.Metrics, test: Training.Metrics, validation: Training.Metrics?,
            seconds: Double, learningRate: Double, peakResidentBytes: Int? = nil
        ) {
            (self.epoch, self.step, self.seconds, self.learningRate) = (epoch, step, seconds, learningRate)
            (trainLoss, trainAccuracy, testLoss, testAccuracy) = (train.loss, train.accuracy, test.loss, test.accuracy)
            (validationLoss, validationAccuracy) = (validation?.loss, validation?.accuracy)
            (peakStepBytes, self.peakResidentBytes) = (train.peakStepBytes, peakResidentBytes)
        }
    }

    /// Settings shown at the top of the report (model, optimizer, batch size, ...), in order.
    public var settings: [[String]] = []
    /// The batch loss and the learning rate at every step.
    public var loss = Series(name: "batch loss", points: [])
    public var learningRate = Series(name: "learning rate", points: [])
    /// The L2 norm of each layer's parameter gradient at every step, before clipping.
    public var gradientNorms: [Series] = []
    /// For each ReLU, the fraction of its units that output 0 for every image of the probe batch.
    public var deadUnits: [Series] = []
    /// For each sigmoid and tanh, the fraction of its outputs where the derivative is below 10%
    /// of its maximum (sigmoid: 4u(1 − u) < 0.1; tanh: 1 − u² < 0.1).
    public var saturation: [Series] = []
    public var epochs: [Epoch] = []

    public init() {}
}

/// Records a training run's history: after each backward, every layer's gradient norm, and every
/// `probeInterval` steps the activity of each ReLU, sigmoid and tanh on a fixed probe batch, run
/// in evaluation mode so the probe changes nothing in the model.
public final class TrainingMonitor {
    public private(set) var history: TrainingHistory
    public let probeBatch: Tensor
    public let probeInterval: Int
    public private(set) var step: Int

    /// Continues `history` (empty for a new run); `step` is the number of steps it already holds.
    public init(probeBatch: Tensor, probeInterval: Int, history: TrainingHistory = TrainingHistory()) {
        self.probeBatch = probeBatch
        self.probeInterval = max(1, probeInterval)
        self.history = history
        step = history.loss.points.last?.step ?? 0
    }

    /// Records one step: its loss, learning rate and each layer's gradient norm, and probes the
    /// activations when the step count is a multiple of the interval (and at the first step).
    public func afterBackward(model: Module, loss: Double, learningRate: Float) throws {
        step += 1
        history.loss.points.append(.init(step: step, value: loss))
        history.learningRate.points.append(.init(step: step, value: Double(learningRate)))
        var norms: [(String, Double)] = []
        for (name, parameter) in model.namedParameters {
            let layer = Self.layerName(of: name),
                squares = parameter.grad.withPointer { bp_sum_squares($0, Int64(parameter.grad.count)) }
            if norms.last?.0 == layer { norms[norms.count - 1].1 += squares } else { norms.append((layer, squares)) }
        }
        let labels = Self.layerLabels(model)
        for (layer, squares) in norms {
            append(squares.squareRoot(), to: &history.gradientNorms, name: "\(layer) \(labels[layer] ?? "")")
        }
        if step == 1 || step % probeInterval == 0 { try probe(model) }
    }

    /// Records the end of an epoch.
    public func endEpoch(_ epoch: TrainingHistory.Epoch) {
        history.epochs.append(epoch)
    }

    /// Adds settings lines to the report's header.
    public func describe(_ settings: [(String, String)]) {
        history.settings += settings.map { [$0.0, $0.1] }
    }

    private func append(_ value: Double, to series: inout [TrainingHistory.Series], name: String) {
        if let index = series.firstIndex(where: { $0.name == name }) {
            series[index].points.append(.init(step: step, value: value))
        } else {
            series.append(.init(name: name, points: [.init(step: step, value: value)]))
        }
    }

    /// "3" for "3.weight", "1.0" for "1.0.bias": the layer a parameter belongs to.
    static func layerName(of parameter: String) -> String {
        String(parameter[..<(parameter.lastIndex(of: ".") ?? parameter.endIndex)])
    }

    /// Runs the probe batch through the model in evaluation mode and records, for every activation
    /// that reports its health, that measure of its output under the activation's name.
    private func probe(_ model: Module) throws {
        var names: [ObjectIdentifier: String] = [:]
        for (name, module) in model.namedModules where names[ObjectIdentifier(module)] == nil {
            names[ObjectIdentifier(module)] = name
        }
        var seen: [(Module, Tensor)] = []
        let observer = ForwardObserver { module, output in seen.append((module, output)) }
        _ = try model.evaluating { try ForwardObserver.$current.withValue(observer) { try model(probeBatch) } }
        for (module, output) in seen {
            guard let health = (module as? Activation)?.health else { continue }
            let label = "\(names[ObjectIdentifier(module)] ?? "?") \(module)"
            switch health {
            case .deadUnits: append(Self.deadFraction(output), to: &history.deadUnits, name: label)
            case .saturation(let derivative):
                append(Self.saturatedFraction(output, derivative: derivative), to: &history.saturation, name: label)
            }
        }
    }

    /// The fraction of units (positions within one example) that are 0 for every example of y [N, ...].
    static func deadFraction(_ y: Tensor) -> Double {
        let examples = y.shape[0], units = y.count / max(examples, 1)
        guard units > 0 else { return 0 }
        var alive = [Bool](repeating: false, count: units)
        y.withPointer { values in
            alive.withUnsafeMutableBufferPointer { alive in
                for n in 0..<examples {
                    let row = values + n * units
                    for u in 0..<units where row[u] > 0 { alive[u] = true }
                }
            }
        }
        return Double(alive.filter { !$0 }.count) / Double(units)
    }

    /// The fraction of outputs u whose derivative f'(u) is below 10% of its maximum (f' scaled to 1).
    static func saturatedFraction(_ y: Tensor, derivative: (Float) -> Float) -> Double {
        guard y.count > 0 else { return 0 }
        return Double(y.scalars.filter { derivative($0) < 0.1 }.count) / Double(y.count)
    }

    /// Each layer's description by its nn.Sequential name ("0" → "Conv2D(...)"): the modules that
    /// hold no others.
    static func layerLabels(_ model: Module) -> [String: String] {
        Dictionary(model.namedModules.filter { $0.module.children.isEmpty }.map { ($0.name, $0.module.description) }) {
            a, _ in a
        }
    }
}
