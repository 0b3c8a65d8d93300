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

            Data-parallel: with --micro-batches S each batch runs as S micro-batches whose gradients are summed in a \
            fixed order. Started by `mpirun -np P` (a build with the MPI trait), the P processes share each batch's \
            micro-batches (S defaults to P) and train the same weights, bit for bit, as one process with the same S; \
            rank 0 prints and writes the files.
            """
    )

    static let defaultModel =
        "conv2d(1,32,3,pad=1) batchnorm2d(32) relu maxpool2d(2) conv2d(32,64,3,pad=1) batchnorm2d(64) relu maxpool2d(2) flatten linear(3136,128) relu linear(128,10)"
    static let defaultData = "/usr/share/datasets/fashion-mnist"

    enum ScheduleName: String, NamedOption { case constant, step, cosine }

    @Option(
        help:
            "The model, as a model spec (shared/bench/modelspec.py's grammar). Default: a small CNN; with --resume, the checkpoint's."
    ) var model: String?
    @OptionGroup var dataOptions: DataOptions
    @Option(help: "Passes over the training set (in all, counting those a resumed run already did).") var epochs = 5
    @Option(name: .customLong("batch-size"), help: "Examples per step (default 128).") var batchSize: Int?
    @OptionGroup var optimizerOptions: OptimizerOptions
    @Option(name: .customLong("lr"), help: "Learning rate (default 0.001 for adam/adamw/rmsprop, 0.05 for sgd).")
    var learningRate: Float?
    @Option(help: "L1 penalty l1 · Σ|w| on the weights of linear and conv layers (default 0).") var l1: Float?
    @Option(help: "L2 penalty ½ · l2 · Σw² on the weights of linear and conv layers (default 0).") var l2: Float?
    @Option(
        help:
            "Learning-rate schedule over epochs: constant, step (halve every 2 epochs) or cosine (decaying towards 0 over the epochs; the default)."
    ) var schedule: ScheduleName?
    @Option(help: "Epochs of linear warm-up before the cosine schedule (default 0).") var warmup: Int?
    @Option(name: .customLong("clip-norm"), help: "Clip gradients to this global L2 norm.") var clipNorm: Float?
    @Option(name: .customLong("clip-value"), help: "Clamp every gradient element to [-v, v].") var clipValue: Float?
    @Option(
        name: .customLong("validation-split"), help: "Fraction of the training set held out for validation (default 0)."
    )
    var validationSplit: Double?
    @Option(help: "Seed of the initialisation and the shuffling (default 1).") var seed: UInt64?
    @Option(help: "Directory for model.safetensors, checkpoint.safetensors and report.html.") var output = "runs/train"
    @Option(
        help:
            "Continue a run from its checkpoint.safetensors (or the directory holding it), with the settings it was trained with; an option given with another value is refused."
    ) var resume: String?
    @Option(
        name: .customLong("checkpoint-segments"),
        help:
            "Gradient checkpointing: run the model's layers as this many segments that keep only their input and recompute the rest in the backward (about √layers uses the least memory); the results are the same bits."
    ) var checkpointSegments: Int?
    @Option(
        name: .customLong("micro-batches"),
        help:
            "Run each batch as this many equal micro-batches (gradient accumulation), their gradients summed in a fixed order; under mpirun the processes share them (default: the process count)."
    ) var microBatches: Int?
    @Option(help: ArgumentHelp(stringLiteral: Precision.help)) var precision: Precision?
    @Flag(
        name: .customLong("sync-batchnorm"),
        help:
            "Normalise with the statistics of the whole batch across micro-batches and processes (default: each micro-batch's own)."
    ) var syncBatchNorm = false
    @OptionGroup var threadOptions: ThreadOptions

    /// What a run uses, each setting given, kept from the checkpoint being resumed, or the default.
    struct Settings {
        let batchSize: Int, optimizer: OptimizerChoice, learningRate: Float
        let l1: Float, l2: Float, schedule: ScheduleName, warmup: Int, clipNorm: Float?, clipValue: Float?
        let validationSplit: Double, seed: UInt64, microBatches: Int, syncBatchNorm: Bool, precision: Precision
    }

    func validate() throws {
        guard epochs > 0, batchSize ?? 1 > 0, microBatches ?? 1 > 0 else {
            throw ValidationError("--epochs, --batch-size and --micro-batches must be positive")
        }
        guard (0..<1).contains(validationSplit ?? 0) else {
            throw ValidationError("--validation-split must be in [0, 1)")
        }
        for (name, value) in [("--l1", l1), ("--l2", l2)] where !(value.map { $0 >= 0 && $0.isFinite } ?? true) {
            throw ValidationError("\(name) must be a finite number >= 0, got \(value!)")
        }
        guard warmup ?? 0 >= 0 else { throw ValidationError("--warmup must be >= 0, got \(warmup!)") }
        if resume == nil { try Self.checkWarmup(warmup ?? 0, schedule ?? .cosine) }
    }

    static func checkWarmup(_ warmup: Int, _ schedule: ScheduleName) throws {
        guard warmup == 0 || schedule == .cosine else {
            throw ValidationError("--warmup applies to the cosine schedule only (got --schedule \(schedule.rawValue))")
        }
    }

    /// One image of each set through the model (in evaluation mode: nothing in the model changes)
    /// and every label against its classes, before any training: a model that cannot take the
    /// images, or labels it has no class for, stop the run now rather than at an epoch's end.
    static func checkFit(_ network: Module, _ sets: [(name: String, data: ImageDataset)]) throws {
        for (name, data) in sets where !data.isEmpty {
            let logits: Tensor
            do { logits = try network.evaluating { try network(data.batch(0..<1).images) } } catch {
                throw ValidationError("the model cannot take the \(name) images: \(Train.message(for: error))")
            }
            let classes = logits.shape.last ?? 0
            if let bad = data.labels.firstIndex(where: { !(0..<classes).contains($0) }) {
                throw ValidationError(
                    "\(name) label \(data.labels[bad]) (example \(bad)) is outside the model's \(classes) classes")
            }
        }
    }

    /// The run's settings: those given, else the resumed checkpoint's, else the defaults.
    func resolve(_ kept: inout RunSettings, processes: Int) throws -> Settings {
        let optimizer = try optimizerOptions.resolve(&kept)
        let schedule = try kept.resolve("--schedule", given: self.schedule, default: .cosine)
        let warmup = try kept.resolve("--warmup", given: self.warmup, default: 0)
        try Self.checkWarmup(warmup, schedule)
        return Settings(
            batchSize: try kept.resolve("--batch-size", given: batchSize, default: 128), optimizer: optimizer,
            learningRate: try kept.resolve("--lr", given: learningRate, default: optimizer.name == .sgd ? 0.05 : 1e-3),
            l1: try kept.resolve("--l1", given: l1, default: 0), l2: try kept.resolve("--l2", given: l2, default: 0),
            schedule: schedule, warmup: warmup,
            clipNorm: try kept.resolveOptional("--clip-norm", given: clipNorm, default: nil),
            clipValue: try kept.resolveOptional("--clip-value", given: clipValue, default: nil),
            validationSplit: try kept.resolve("--validation-split", given: validationSplit, default: 0),
            seed: try kept.resolve("--seed", given: seed, default: 1),
            microBatches: try kept.resolve("--micro-batches", given: microBatches, default: processes),
            syncBatchNorm: try kept.resolve("--sync-batchnorm", given: syncBatchNorm ? true : nil, default: false),
            precision: try kept.resolve("--precision", given: precision, default: .fp32))
    }

    /// Refuses micro-batches that the processes cannot share equally or the batch cannot hold.
    static func checkSplit(_ settings: Settings, processes: Int) throws {
        guard settings.microBatches % processes == 0 else {
            throw ValidationError(
                "--micro-batches \(settings.microBatches) cannot be shared equally by the \(processes) processes mpirun "
                    + "started; pass a multiple of \(processes)")
        }
        guard settings.batchSize % settings.microBatches == 0 else {
            throw ValidationError(
                "--batch-size \(settings.batchSize) does not split into \(settings.microBatches) equal micro-batches; "
                    + "pass a batch size that is a multiple of --micro-batches")
        }
    }

    /// Runs the training as one process of the job mpirun started (or alone): every process checks
    /// that the others got the same arguments; only rank 0 prints and writes. A process that fails
    /// prints its error and ends the whole job.
    func run() throws {
        try threadOptions.apply()
        let group = try MPIWorld.start()
        defer { group.finish() }
        guard group.size > 1 else { return try train(group) }
        do {
            try Self.checkSameArguments(group)
            if group.rank != 0 { dup2(open("/dev/null", O_WRONLY), STDOUT_FILENO) }
            try train(group)
        } catch {
            FileHandle.standardError.write(
                Data("Error (process \(group.rank) of \(group.size)): \(Self.message(for: error))\n".utf8))
            group.abort(1)
        }
    }

    /// Throws unless every process was started with this one's arguments (compared by a 64-bit hash).
    static func checkSameArguments(_ group: ProcessGroup) throws {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
        for byte in CommandLine.arguments.dropFirst().joined(separator: "\0").utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        let all = try group.allGather([Double(hash >> 32), Double(hash & 0xffff_ffff)])
        if let other = stride(from: 0, to: all.count, by: 2).first(where: { all[$0] != all[0] || all[$0 + 1] != all[1] }
        ) {
            throw ValidationError(
                "process \(other / 2) was started with other arguments than process 0; every process of the job needs the same"
            )
        }
    }

    private func train(_ group: ProcessGroup) throws {
        let resumeURL = resume.map(RunSettings.checkpointURL)
        let resumed = try resumeURL.map { try SafeTensors.read(contentsOf: $0) }
        var kept = try RunSettings(resuming: resumed?.metadata)
        let settings = try resolve(&kept, processes: group.size)
        try Self.checkSplit(settings, processes: group.size)
        settings.precision.warnIfEmulated()
        let (batchSize, optimizer) = (settings.batchSize, settings.optimizer)
        let (l1, l2, schedule, warmup, clipNorm, clipValue, seed) = (
            settings.l1, settings.l2, settings.schedule, settings.warmup, settings.clipNorm, settings.clipValue,
            settings.seed
        )
        let (full, test) = try dataOptions.load()
        let held = Int(Double(full.count) * settings.validationSplit)
        let train = full.subset(held..<full.count)
        let validation = held > 0 ? full.subset(0..<held) : nil
        guard !train.isEmpty else {
            throw ValidationError(
                "\(dataOptions.data) has no training images left to train on (\(full.count) in all, \(held) held out)")
        }

        let spec = model ?? resumed?.metadata["model"] ?? Train.defaultModel
        let network = try ModelSpec.build(spec, seed: seed)
        try network.checkpoint(segments: checkpointSegments)
        let parallel = try DataParallel(
            microBatches: settings.microBatches, syncBatchNorm: settings.syncBatchNorm, group: group)
        try parallel.check(batchSize: batchSize, model: network)
        let rate = settings.learningRate
        let parameters = network.parameters
        let step = try optimizer.make(parameters, learningRate: rate)
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
                        "\(optimizer.name.rawValue), learning rate \(rate), \(schedule.rawValue) schedule"
                            + (optimizer.weightDecay > 0 ? ", weight decay \(optimizer.weightDecay)" : "")
                    ),
                    ("batch size", "\(batchSize)"), ("seed", "\(seed)"), ("threads", "\(Threads.count)"),
                    ("precision", "\(settings.precision)"),
                ]
                    + (settings.microBatches > 1
                        ? [
                            (
                                "micro-batches",
                                "\(settings.microBatches) over \(group.size) process(es)"
                                    + (settings.syncBatchNorm ? ", synchronized batch norm" : "")
                            )
                        ] : [])
                    + (aids.penalty.map { [("penalty", "l1 \($0.l1), l2 \($0.l2)")] } ?? [])
                    + (clipNorm.map { [("clip norm", "\($0)")] } ?? [])
                    + (clipValue.map { [("clip value", "\($0)")] } ?? []))
        }
        let directory = group.rank == 0 ? try prepareOutput(output) : URL(fileURLWithPath: output)
        try Self.checkFit(network, [("training", full), ("test", test)])
        print(
            "Training \(parameters.reduce(0) { $0 + $1.value.count }) parameters on \(train.count) images "
                + "(\(validation.map { "\($0.count) held out, " } ?? "")\(test.count) test), "
                + (group.size > 1 ? "\(group.size) processes x " : "") + "\(Threads.count) thread(s), "
                + (settings.precision == .fp32 ? "" : "\(settings.precision) products, ")
                + "\(optimizer.name.rawValue) lr \(rate)")
        for epoch in firstEpoch..<epochs {
            if let rates { step.learningRate = rates.learningRate(at: epoch) }
            let clock = ContinuousClock(), start = clock.now
            let metrics = try Precision.$current.withValue(settings.precision) {
                try Training.epoch(
                    model: network, optimizer: step, data: train, batchSize: batchSize,
                    seed: seed &+ UInt64(epoch), aids: aids, monitor: monitor, parallel: parallel
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
            }
            let seconds = (clock.now - start).seconds
            guard group.rank == 0 else { continue }  // the others have the same weights and write nothing
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
                    format: "  memory: a step's tensors at most %.1f MB; the process's peak resident %.1f MB%@",
                    Double(metrics.peakStepBytes) / 1e6, Double(resident) / 1e6,
                    group.size > 1
                        ? String(
                            format: "; received %.2f MB a step from the other processes",
                            Double(metrics.receivedBytesPerStep) / 1e6)
                        : ""))
            monitor.endEpoch(
                .init(
                    epoch: epoch + 1, step: monitor.step, train: metrics, test: testMetrics, validation: held,
                    seconds: seconds, learningRate: Double(step.learningRate), peakResidentBytes: resident))
            let metadata = ["model": spec, "format": "pt"]
            try Checkpoint.save(network, to: directory.appendingPathComponent("model.safetensors"), metadata: metadata)
            try TrainingCheckpoint.save(
                model: network, optimizer: step, history: monitor.history, epochsDone: epoch + 1,
                metadata: metadata.merging([kept.metadata]) { $1 },
                to: directory.appendingPathComponent("checkpoint.safetensors"))
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
