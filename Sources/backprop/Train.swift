import ArgumentParser
import Backprop
import BackpropFixtures
import BackpropTraining
import Foundation

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model spec on an image-classification data set in IDX format (default: Fashion-MNIST).",
        discussion: """
            Prints a live progress line per epoch, then the epoch's train and test loss and accuracy. After each epoch it \
            writes, in --output: model.safetensors (the weights with nn.Sequential names, loadable by \
            safetensors.torch.load_file + load_state_dict), checkpoint.safetensors (model, optimizer and history, for \
            --resume) and report.html (loss and accuracy curves, learning rate, per-layer gradient norms, dead ReLU and \
            saturated sigmoid/tanh units). Every file is replaced atomically.
            """
    )

    static let defaultModel =
        "conv2d(1,32,3,pad=1) batchnorm2d(32) relu maxpool2d(2) conv2d(32,64,3,pad=1) batchnorm2d(64) relu maxpool2d(2) flatten linear(3136,128) relu linear(128,10)"
    static let defaultData = "/usr/share/datasets/fashion-mnist"

    enum OptimizerName: String, ExpressibleByArgument, CaseIterable { case sgd, adam, adamw, rmsprop }
    enum ScheduleName: String, ExpressibleByArgument, CaseIterable { case constant, step, cosine }

    @Option(
        help:
            "The model, as a model spec (shared/bench/modelspec.py's grammar). Default: a small CNN; with --resume, the checkpoint's."
    ) var model: String?
    @OptionGroup var dataOptions: DataOptions
    @Option(help: "Passes over the training set (in all, counting those a resumed run already did).") var epochs = 5
    @Option(name: .customLong("batch-size"), help: "Examples per step.") var batchSize = 128
    @Option(help: "sgd, adam, adamw or rmsprop.") var optimizer: OptimizerName = .adam
    @Option(name: .customLong("lr"), help: "Learning rate (default 0.001 for adam/adamw/rmsprop, 0.05 for sgd).")
    var learningRate: Float?
    @Option(help: "Momentum for sgd and rmsprop.") var momentum: Float = 0.9
    @Option(name: .customLong("weight-decay"), help: "Weight decay (decoupled for adamw).") var weightDecay: Float = 0
    @Option(help: "L1 penalty l1 · Σ|w| on the weights of linear and conv layers.") var l1: Float = 0
    @Option(help: "L2 penalty ½ · l2 · Σw² on the weights of linear and conv layers.") var l2: Float = 0
    @Option(
        help:
            "Learning-rate schedule over epochs: constant, step (halve every 2 epochs) or cosine (decaying towards 0 over the epochs)."
    ) var schedule: ScheduleName = .cosine
    @Option(help: "Epochs of linear warm-up before the cosine schedule.") var warmup = 0
    @Option(name: .customLong("clip-norm"), help: "Clip gradients to this global L2 norm.") var clipNorm: Float?
    @Option(name: .customLong("clip-value"), help: "Clamp every gradient element to [-v, v].") var clipValue: Float?
    @Option(name: .customLong("validation-split"), help: "Fraction of the training set held out for validation.")
    var validationSplit = 0.0
    @Option(help: "Seed of the initialisation and the shuffling.") var seed: UInt64 = 1
    @Option(help: "Directory for model.safetensors, checkpoint.safetensors and report.html.") var output = "runs/train"
    @Option(help: "Continue a run from its checkpoint.safetensors (or the directory holding it).") var resume: String?
    @Option(
        name: .customLong("checkpoint-segments"),
        help:
            "Gradient checkpointing: run the model's layers as this many segments that keep only their input and recompute the rest in the backward (about √layers uses the least memory); the results are the same bits."
    ) var checkpointSegments: Int?
    @OptionGroup var threadOptions: ThreadOptions

    func validate() throws {
        guard epochs > 0, batchSize > 0 else { throw ValidationError("--epochs and --batch-size must be positive") }
        guard (0..<1).contains(validationSplit) else { throw ValidationError("--validation-split must be in [0, 1)") }
        for (name, value) in [("--l1", l1), ("--l2", l2)] where !(value >= 0 && value.isFinite) {
            throw ValidationError("\(name) must be a finite number >= 0, got \(value)")
        }
        guard warmup == 0 || schedule == .cosine else {
            throw ValidationError("--warmup applies to the cosine schedule only (got --schedule \(schedule.rawValue))")
        }
        guard warmup >= 0 else { throw ValidationError("--warmup must be >= 0, got \(warmup)") }
    }

    func run() throws {
        try threadOptions.apply()
        let (full, test) = try dataOptions.load()
        let held = Int(Double(full.count) * validationSplit)
        let train = full.subset(held..<full.count)
        let validation = held > 0 ? full.subset(0..<held) : nil
        guard !train.isEmpty else {
            throw ValidationError(
                "\(dataOptions.data) has no training images left to train on (\(full.count) in all, \(held) held out)")
        }

        let resumeURL = resume.map { path -> URL in
            var isDirectory: ObjCBool = false
            let url = URL(fileURLWithPath: path)
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
                ? url.appendingPathComponent("checkpoint.safetensors") : url
        }
        let resumed = try resumeURL.map { try SafeTensors.read(contentsOf: $0) }
        let spec = model ?? resumed?.metadata["model"] ?? Train.defaultModel
        let network = try ModelSpec.build(spec, seed: seed)
        try network.checkpoint(segments: checkpointSegments)
        let rate = learningRate ?? (optimizer == .sgd ? 0.05 : 1e-3)
        let parameters = network.parameters
        let step: Optimizer =
            switch optimizer {
            case .sgd: try SGD(parameters: parameters, learningRate: rate, momentum: momentum, weightDecay: weightDecay)
            case .adam: try Adam(parameters: parameters, learningRate: rate, weightDecay: weightDecay)
            case .adamw: try AdamW(parameters: parameters, learningRate: rate, weightDecay: weightDecay)
            case .rmsprop:
                try RMSprop(parameters: parameters, learningRate: rate, weightDecay: weightDecay, momentum: momentum)
            }
        let rates: LearningRateSchedule? =
            switch schedule {
            case .constant: nil
            case .step: try StepSchedule(base: rate, stepSize: 2, gamma: 0.5)
            case .cosine: try CosineSchedule(base: rate, total: epochs, warmup: warmup)
            }
        let aids = GradientAids(
            penalty: l1 > 0 || l2 > 0 ? try WeightPenalty(l1: l1, l2: l2) : nil,
            clipNorm: clipNorm, clipValue: clipValue)
        let batches = (train.count + batchSize - 1) / batchSize
        let probe = train.batch(0..<min(128, train.count)).images
        var firstEpoch = 0
        let monitor: TrainingMonitor
        if let resumeURL, let resumed {
            let saved = try TrainingCheckpoint.load(resumed, source: resumeURL.path, model: network, optimizer: step)
            guard saved.epochsDone < epochs else {
                throw ValidationError(
                    "\(resumeURL.path) has already trained \(saved.epochsDone) epochs; pass --epochs with more to continue"
                )
            }
            firstEpoch = saved.epochsDone
            monitor = TrainingMonitor(probeBatch: probe, probeInterval: max(1, batches / 10), history: saved.history)
            print("Resuming from \(resumeURL.path) after epoch \(firstEpoch)")
        } else {
            monitor = TrainingMonitor(probeBatch: probe, probeInterval: max(1, batches / 10))
            monitor.describe(
                [
                    ("model", spec),
                    (
                        "data",
                        "\(dataOptions.data): \(train.count) training images, \(validation?.count ?? 0) held out, \(test.count) test"
                    ),
                    (
                        "optimizer",
                        "\(optimizer.rawValue), learning rate \(rate), \(schedule.rawValue) schedule"
                            + (weightDecay > 0 ? ", weight decay \(weightDecay)" : "")
                    ),
                    ("batch size", "\(batchSize)"), ("seed", "\(seed)"), ("threads", "\(Threads.count)"),
                ]
                    + (aids.penalty.map { [("penalty", "l1 \($0.l1), l2 \($0.l2)")] } ?? [])
                    + (clipNorm.map { [("clip norm", "\($0)")] } ?? [])
                    + (clipValue.map { [("clip value", "\($0)")] } ?? []))
        }
        let directory = URL(fileURLWithPath: output)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        print(
            "Training \(parameters.reduce(0) { $0 + $1.value.count }) parameters on \(train.count) images "
                + "(\(validation.map { "\($0.count) held out, " } ?? "")\(test.count) test), \(Threads.count) thread(s), "
                + "\(optimizer.rawValue) lr \(rate)")
        for epoch in firstEpoch..<epochs {
            if let rates { step.learningRate = rates.learningRate(at: epoch) }
            let clock = ContinuousClock(), start = clock.now
            let metrics = try Training.epoch(
                model: network, optimizer: step, data: train, batchSize: batchSize,
                seed: seed &+ UInt64(epoch), aids: aids, monitor: monitor
            ) { done, total, loss, accuracy in
                guard done % 10 == 0 || done == total else { return }
                let seconds = (clock.now - start).seconds
                let rate = Double(min(done * batchSize, train.count)) / max(seconds, 1e-9)
                let eta = Double(total - done) * seconds / Double(done)
                print(
                    String(
                        format: "\r  epoch %d/%d  [%d/%d]  loss %.4f  acc %.2f%%  %.0f img/s  ETA %.0fs ",
                        epoch + 1, epochs, done, total, loss, 100 * accuracy, rate, eta), terminator: "")
                fflush(nil)  // all C streams: the progress line has no newline
            }
            let seconds = (clock.now - start).seconds
            let testMetrics = try Training.evaluate(model: network, data: test)
            let held = try validation.map { try Training.evaluate(model: network, data: $0) }
            print(
                String(
                    format:
                        "\repoch %d: train loss %.4f acc %.2f%%%@ | test loss %.4f acc %.2f%% | %.1fs, %.0f img/s, lr %g",
                    epoch + 1, metrics.loss, 100 * metrics.accuracy,
                    held.map { String(format: " | validation loss %.4f acc %.2f%%", $0.loss, 100 * $0.accuracy) } ?? "",
                    testMetrics.loss, 100 * testMetrics.accuracy, seconds, Double(train.count) / seconds,
                    Double(step.learningRate)))
            let resident = ProcessSetup.peakResidentBytes
            print(
                String(
                    format: "  memory: a step's tensors at most %.1f MB; the process's peak resident %.1f MB",
                    Double(metrics.peakStepBytes) / 1e6, Double(resident) / 1e6))
            monitor.endEpoch(
                .init(
                    epoch: epoch + 1, step: monitor.step, train: metrics, test: testMetrics, validation: held,
                    seconds: seconds, learningRate: Double(step.learningRate), peakResidentBytes: resident))
            let metadata = ["model": spec, "format": "pt"]
            try Checkpoint.save(network, to: directory.appendingPathComponent("model.safetensors"), metadata: metadata)
            try TrainingCheckpoint.save(
                model: network, optimizer: step, history: monitor.history, epochsDone: epoch + 1,
                metadata: metadata, to: directory.appendingPathComponent("checkpoint.safetensors"))
            try TrainingReport.write(monitor.history, to: directory.appendingPathComponent("report.html"))
        }
        print("Wrote \(output)/model.safetensors, \(output)/checkpoint.safetensors and \(output)/report.html")
    }
}

/// Where the IDX data set is, and loading it with an error that says which package provides it.
struct DataOptions: ParsableArguments {
    @Option(help: "A directory with train- and t10k- images and labels in IDX format (.gz or plain).") var data = Train
        .defaultData

    /// The training and test sets.
    func load() throws -> (train: ImageDataset, test: ImageDataset) {
        let directory = URL(fileURLWithPath: data)
        guard FileManager.default.fileExists(atPath: directory.path) else {
            throw ValidationError(
                "\(data) does not exist. Fashion-MNIST comes from the Debian package dataset-fashion-mnist "
                    + "(apt-get install dataset-fashion-mnist); or pass --data DIR with MNIST-layout IDX files.")
        }
        let sets = (
            train: try ImageDataset.load(directory: directory, prefix: "train"),
            test: try ImageDataset.load(directory: directory, prefix: "t10k")
        )
        guard !sets.test.isEmpty else { throw ValidationError("\(data): the test set (t10k-*) has no images") }
        return sets
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
