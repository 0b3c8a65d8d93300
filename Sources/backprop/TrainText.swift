import ArgumentParser
import Backprop
import BackpropTraining
import Foundation

struct TrainText: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-text",
        abstract: "Train a character-level language model by truncated backpropagation through time.",
        discussion: """
            Reads a text file, or every plain file of a folder sorted by name (default: Debian's fortunes package), as \
            bytes; holds out the last 5% for validation; cuts the rest into --batch contiguous streams and trains on \
            --seq bytes of each at a time, the LSTM state carried (without its gradient) from one update to the next. \
            Prints a live progress line, the validation loss at intervals and at the end, and writes in --output: \
            model.safetensors (nn.Sequential names, the model spec and vocabulary in its metadata; for backprop sample), \
            checkpoint.safetensors (for --resume) and report.html. Every file is replaced atomically.
            """
    )

    enum ScheduleName: String, NamedOption { case constant, cosine }

    @Option(help: "A text file or a folder of them.") var corpus = TextCorpus.defaultPath
    @Option(help: "The model spec; `vocab` stands for the vocabulary size. Default: \(CharacterModel.defaultSpec).")
    var model: String?
    @Option(help: "Updates to train (in all, counting those a resumed run already did).") var steps = 2000
    @Option(help: "Bytes of every stream per update (the BPTT length; default 64).") var seq: Int?
    @Option(help: "Contiguous streams per update (default 32).") var batch: Int?
    @OptionGroup var optimizerOptions: OptimizerOptions
    @Option(name: .customLong("lr"), help: "Learning rate (default 0.002).") var learningRate: Float?
    @Option(help: "Learning-rate schedule over the updates: constant (the default) or cosine.")
    var schedule: ScheduleName?
    @Option(name: .customLong("clip-norm"), help: "Clip gradients to this global L2 norm (0: no clipping; default 5).")
    var clipNorm: Float?
    @Option(name: .customLong("eval-every"), help: "Updates between validation losses.") var evalEvery = 500
    @Option(help: "Seed of the initialisation (default 1).") var seed: UInt64?
    @Option(help: ArgumentHelp(stringLiteral: Precision.help)) var precision: Precision?
    @Option(help: "Directory for model.safetensors, checkpoint.safetensors and report.html.") var output = "runs/text"
    @Option(
        help:
            "Continue a run from its checkpoint.safetensors (or the directory holding it), with the settings it was trained with; an option given with another value is refused."
    ) var resume: String?
    @OptionGroup var threadOptions: ThreadOptions

    func validate() throws {
        guard steps > 0, seq ?? 1 > 0, batch ?? 1 > 0, evalEvery > 0 else {
            throw ValidationError("--steps, --seq, --batch and --eval-every must be positive")
        }
        if let learningRate, !(learningRate > 0 && learningRate.isFinite) {
            throw ValidationError("--lr must be a positive number, got \(learningRate)")
        }
        if let clipNorm, !(clipNorm >= 0 && clipNorm.isFinite) {
            throw ValidationError("--clip-norm must be >= 0, got \(clipNorm)")
        }
    }

    func run() throws {
        try threadOptions.apply()
        guard MPIWorld.launchedSize == 1 else {
            throw ValidationError(
                "train-text runs as one process; mpirun started \(MPIWorld.launchedSize) (data-parallel training is `backprop train`'s)"
            )
        }
        let resumeURL = resume.map(RunSettings.checkpointURL)
        let resumed = try resumeURL.map { try SafeTensors.read(contentsOf: $0) }
        var kept = try RunSettings(resuming: resumed?.metadata)
        let seq = try kept.resolve("--seq", given: self.seq, default: 64)
        let batch = try kept.resolve("--batch", given: self.batch, default: 32)
        let optimizer = try optimizerOptions.resolve(&kept)
        let learningRate = try kept.resolve("--lr", given: self.learningRate, default: 2e-3)
        let schedule = try kept.resolve("--schedule", given: self.schedule, default: .constant)
        let clipNorm = try kept.resolve("--clip-norm", given: self.clipNorm, default: 5)
        let seed = try kept.resolve("--seed", given: self.seed, default: 1)
        let precision = try kept.resolve("--precision", given: self.precision, default: .fp32)
        precision.warnIfEmulated()
        let text = try TextCorpus(path: corpus)
        let streams = try TokenStreams(text.train, batch: batch, steps: seq, source: corpus)
        let spec = model ?? resumed?.metadata["model"] ?? CharacterModel.defaultSpec
        let language = try CharacterModel(spec: spec, vocabulary: text.vocabulary, seed: seed)
        let parameters = language.network.parameters
        let step = try optimizer.make(parameters, learningRate: learningRate)
        let rates: LearningRateSchedule? =
            schedule == .cosine ? try CosineSchedule(base: learningRate, total: steps, warmup: 0) : nil
        let trainer: TextTrainer
        if let resumeURL, let resumed {
            let saved = try TextTrainer.resume(resumed, source: resumeURL.path, model: language, optimizer: step)
            guard saved.updatesDone < steps else {
                throw ValidationError(
                    "\(resumeURL.path) has already trained \(saved.updatesDone) updates; pass --steps with more to continue"
                )
            }
            trainer = TextTrainer(
                model: language, optimizer: step, streams: streams, clipNorm: clipNorm > 0 ? clipNorm : nil,
                history: saved.history, updatesDone: saved.updatesDone, states: saved.states)
            print("Resuming from \(resumeURL.path) after update \(saved.updatesDone)")
        } else {
            trainer = TextTrainer(
                model: language, optimizer: step, streams: streams, clipNorm: clipNorm > 0 ? clipNorm : nil)
            trainer.monitor.describe([
                ("model", spec),
                ("corpus", "\(corpus): \(text.train.count) training bytes, \(text.validation.count) validation"),
                ("vocabulary", "\(text.vocabulary.count) bytes"),
                (
                    "optimizer",
                    "\(optimizer.name.rawValue), learning rate \(learningRate), \(schedule.rawValue) schedule"
                ),
                ("updates", "\(steps) of \(batch) streams × \(seq) bytes"), ("clip norm", "\(clipNorm)"),
                ("seed", "\(seed)"), ("threads", "\(Threads.count)"), ("precision", "\(precision)"),
            ])
        }
        let directory = try prepareOutput(output)
        print(
            "Training \(parameters.reduce(0) { $0 + $1.value.count }) parameters on \(text.train.count) bytes "
                + "(\(text.validation.count) for validation, vocabulary \(text.vocabulary.count)), "
                + "\(Threads.count) thread(s), " + (precision == .fp32 ? "" : "\(precision) products, ")
                + "\(optimizer.name.rawValue) lr \(learningRate)")
        let reachPoints = Set([1, steps / 4, steps / 2, steps])
        let clock = ContinuousClock(), start = clock.now, first = trainer.updatesDone
        var running = 0.0
        try Precision.$current.withValue(precision) {  // the products of the updates, the reach and validation
            while trainer.updatesDone < steps {
                if let rates { step.learningRate = rates.learningRate(at: trainer.updatesDone) }
                let loss = try trainer.update()
                let done = trainer.updatesDone
                running = done == first + 1 ? loss : 0.98 * running + 0.02 * loss
                if reachPoints.contains(done) { try trainer.measureReach() }
                if done % 10 == 0 || done == steps {
                    let seconds = (clock.now - start).seconds, rate = Double((done - first) * batch * seq) / seconds
                    print(
                        String(
                            format: "\r  update %d/%d  loss %.3f  %.0f chars/s  ETA %.0fs ", done, steps, running, rate,
                            Double(steps - done) * seconds / Double(done - first)), terminator: "")
                    fflush(nil)
                }
                if done % evalEvery == 0 || done == steps {
                    let seconds = (clock.now - start).seconds
                    let validation = try trainer.validate(text.validation)
                    print(
                        String(
                            format:
                                "\rupdate %d: train loss %.4f | validation %.4f nats/char, %.4f bits/char | %.0f chars/s",
                            done, running, validation, validation / log(2.0),
                            Double((done - first) * batch * seq) / seconds
                        ))
                    try Checkpoint.save(
                        language.network, to: directory.appendingPathComponent("model.safetensors"),
                        metadata: language.metadata)
                    try trainer.save(
                        to: directory.appendingPathComponent("checkpoint.safetensors"),
                        metadata: [kept.metadata.key: kept.metadata.value])
                    try TextReport.write(trainer.history, to: directory.appendingPathComponent("report.html"))
                }
            }
        }
        print("Wrote \(output)/model.safetensors, \(output)/checkpoint.safetensors and \(output)/report.html")
    }
}

struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text from a model trained by backprop train-text.")

    @Option(help: "model.safetensors (or checkpoint.safetensors) from backprop train-text.") var weights: String
    @Option(help: "Text the model reads before it generates.") var prime = ""
    @Option(help: "Bytes to generate.") var length = 500
    @Option(help: "Softmax temperature: below 1 more conservative, above 1 more varied.") var temperature: Float = 1
    @Option(help: "Seed of the sampling: the same seed gives the same text.") var seed: UInt64 = 1
    @OptionGroup var threadOptions: ThreadOptions

    func validate() throws {
        guard temperature > 0, temperature.isFinite else {
            throw ValidationError("--temperature must be a positive number, got \(temperature)")
        }
        guard length >= 0 else { throw ValidationError("--length must be >= 0, got \(length)") }
    }

    func run() throws {
        try threadOptions.apply()
        let model = try CharacterModel.load(contentsOf: URL(fileURLWithPath: weights))
        let text = try model.sample(
            prime: Array(prime.utf8), length: length, temperature: temperature, seed: seed)
        FileHandle.standardOutput.write(Data(Array(prime.utf8) + text + [10]))
    }
}
