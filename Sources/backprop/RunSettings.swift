import ArgumentParser
import Backprop
import Foundation

/// The settings a training run keeps across `--resume`: each option's value as text, saved in the
/// checkpoint's metadata ("settings", a JSON object keyed by option). A resumed run takes every
/// option it is not given from the checkpoint, and refuses one given with another value, naming
/// both: a resumed run continues the same run.
struct RunSettings {
    /// The checkpoint's settings (nil: a new run).
    let saved: [String: String]?
    /// What the run uses, as it will be saved.
    private(set) var values: [String: String] = [:]

    static let metadataKey = "settings"

    /// The checkpoint `--resume PATH` names: PATH, or PATH/checkpoint.safetensors for a directory.
    static func checkpointURL(_ path: String) -> URL {
        var isDirectory: ObjCBool = false
        let url = URL(fileURLWithPath: path)
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
            ? url.appendingPathComponent("checkpoint.safetensors") : url
    }

    init(resuming metadata: [String: String]?) throws {
        guard let metadata else {
            saved = nil
            return
        }
        guard let text = metadata[Self.metadataKey] else {
            saved = [:]  // a checkpoint from before settings were saved: the options decide
            return
        }
        guard let decoded = try? JSONDecoder().decode([String: String].self, from: Data(text.utf8)) else {
            throw ValidationError("the checkpoint's settings are not readable: \(text)")
        }
        saved = decoded
    }

    /// The value of `option`: the one given, else the checkpoint's, else `fallback`. A given value
    /// that differs from the checkpoint's is refused.
    mutating func resolve<T: LosslessStringConvertible>(_ option: String, given: T?, default fallback: T) throws -> T {
        try resolveOptional(option, given: given, default: fallback)!
    }

    /// The same for an option whose absence means something (nil: no clipping).
    mutating func resolveOptional<T: LosslessStringConvertible>(
        _ option: String, given: T?, default fallback: T?
    ) throws -> T? {
        let text = { (value: T?) in value.map(\.description) ?? "none" }
        if let given, let kept = saved?[option], kept != text(given) {
            throw ValidationError(
                "\(option) \(given) contradicts the checkpoint, which was trained with \(option) \(kept); "
                    + "leave it out to continue the same run")
        }
        var value = given ?? fallback
        if given == nil, let kept = saved?[option] {
            guard kept == "none" || T(kept) != nil else {
                throw ValidationError("the checkpoint's \(option) \(kept) is not a value of that option")
            }
            value = kept == "none" ? nil : T(kept)
        }
        values[option] = text(value)
        return value
    }

    /// The settings as the checkpoint's metadata entry.
    var metadata: (key: String, value: String) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let data = (try? encoder.encode(values)) ?? Data("{}".utf8)
        return (Self.metadataKey, String(decoding: data, as: UTF8.self))
    }
}

/// The directory a training command writes into, created if need be and checked writable before
/// any training, so that a bad --output fails at once with a one-line message.
func prepareOutput(_ path: String) throws -> URL {
    let url = URL(fileURLWithPath: path)
    do {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    } catch {
        throw ValidationError(
            "--output \(path): cannot create the directory (\((error as NSError).localizedDescription))")
    }
    guard access(path, W_OK) == 0 else {
        throw ValidationError("--output \(path): the directory is not writable (\(String(cString: strerror(errno))))")
    }
    return url
}

/// An option whose values are its cases' names, as `RunSettings` keeps them.
protocol NamedOption: RawRepresentable<String>, LosslessStringConvertible, ExpressibleByArgument, CaseIterable {}

extension NamedOption {
    init?(_ description: String) { self.init(rawValue: description) }
    var description: String { rawValue }
}

/// The optimizers the training commands offer.
enum OptimizerName: String, NamedOption {
    case sgd, adam, adamw, rmsprop
}

/// The optimizer options both training commands take (each its own --lr, whose default differs).
struct OptimizerOptions: ParsableArguments {
    @Option(help: "sgd, adam, adamw or rmsprop (default adam).") var optimizer: OptimizerName?
    @Option(help: "Momentum for sgd and rmsprop (default 0.9).") var momentum: Float?
    @Option(name: .customLong("weight-decay"), help: "Weight decay (decoupled for adamw; default 0).")
    var weightDecay: Float?

    /// The optimizer a run uses: each setting given, kept from the checkpoint, or the default.
    func resolve(_ kept: inout RunSettings) throws -> OptimizerChoice {
        OptimizerChoice(
            name: try kept.resolve("--optimizer", given: optimizer, default: .adam),
            momentum: try kept.resolve("--momentum", given: momentum, default: 0.9),
            weightDecay: try kept.resolve("--weight-decay", given: weightDecay, default: 0))
    }
}

/// An optimizer's kind and settings, apart from the learning rate.
struct OptimizerChoice {
    let name: OptimizerName, momentum: Float, weightDecay: Float

    /// The optimizer over `parameters` (momentum: SGD's and RMSprop's).
    func make(_ parameters: [Parameter], learningRate: Float) throws -> Optimizer {
        switch name {
        case .sgd:
            try SGD(parameters: parameters, learningRate: learningRate, momentum: momentum, weightDecay: weightDecay)
        case .adam: try Adam(parameters: parameters, learningRate: learningRate, weightDecay: weightDecay)
        case .adamw: try AdamW(parameters: parameters, learningRate: learningRate, weightDecay: weightDecay)
        case .rmsprop:
            try RMSprop(
                parameters: parameters, learningRate: learningRate, weightDecay: weightDecay, momentum: momentum)
        }
    }
}

extension Precision: NamedOption {
    static let help =
        "Precision of the matrix products of linear, convolution and recurrent layers: fp32, or bf16 (bfloat16 inputs, float32 sums; some saved activations in bfloat16). Default fp32."

    /// Says on standard error when bfloat16 products will be emulated (no AVX512_BF16 here).
    func warnIfEmulated() {
        guard self == .bf16, !Precision.hasInstruction else { return }
        FileHandle.standardError.write(
            Data(
                "backprop: this CPU has no AVX512_BF16: bfloat16 products are emulated (the same bits, several times slower than fp32)\n"
                    .utf8))
    }
}
