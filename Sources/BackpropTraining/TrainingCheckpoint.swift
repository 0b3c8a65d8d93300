import Backprop
import Foundation

/// A training run's state in one `.safetensors` file, so a resumed run continues exactly where it
/// stopped: the model's state under its own names, the optimizer's under "optimizer.<name>", where
/// each of the model's random generators stands (dropout's) under "random.<name>" as an int64
/// scalar holding the generator's 64 bits, a language model's carried recurrent states under
/// "carried.<name>", and in the metadata the optimizer's kind and what the run needs (epochs done
/// and history, or updates done and vocabulary). One file, written atomically, so the model and
/// optimizer can never come from different steps.
public enum TrainingCheckpoint {
    public struct Saved {
        public let epochsDone: Int
        public let history: TrainingHistory
        /// Everything the run put in the metadata (model spec, optimizer, ...).
        public let metadata: [String: String]
    }

    /// Where the optimizer's entries and the random generators' sit among the file's tensors.
    static let optimizerPrefix = "optimizer.", randomPrefix = "random.", carriedPrefix = "carried."

    /// A checkpoint's tensors split into the model's state, the optimizer's, the random generators'
    /// and the carried states (prefixes removed). A plain model file has only the model part.
    public static func split(
        _ tensors: [String: StoredArray]
    ) -> (
        model: [String: StoredArray], optimizer: [String: StoredArray], random: [String: StoredArray],
        carried: [String: StoredArray]
    ) {
        var parts = [String: [String: StoredArray]]()
        for (name, array) in tensors {
            let prefix = [optimizerPrefix, randomPrefix, carriedPrefix].first { name.hasPrefix($0) } ?? ""
            parts[prefix, default: [:]][String(name.dropFirst(prefix.count))] = array
        }
        return (
            parts[""] ?? [:], parts[optimizerPrefix] ?? [:], parts[randomPrefix] ?? [:], parts[carriedPrefix] ?? [:]
        )
    }

    /// Writes the model, the optimizer, the generators, `carried` (under "carried.") and `metadata`
    /// with the optimizer's kind.
    public static func write(
        model: Module, optimizer: Optimizer, carried: [String: StoredArray] = [:], metadata: [String: String],
        to url: URL
    ) throws {
        var tensors = Checkpoint.stateDict(of: model)
        for (name, array) in optimizer.state { tensors[optimizerPrefix + name] = array }
        for (name, random) in model.namedRandomStates {
            tensors[randomPrefix + name] = StoredArray(
                shape: [], elements: .int64([Int64(bitPattern: random.generator.state)]))
        }
        for (name, array) in carried { tensors[carriedPrefix + name] = array }
        var fields = metadata
        fields["optimizer_kind"] = String(describing: type(of: optimizer))
        try SafeTensors.write(SafeTensors.File(tensors: tensors, metadata: fields), to: url)
    }

    /// Loads a checkpoint already read into the model and optimizer (which must be of the kind that
    /// saved it), changing nothing when anything does not fit; returns its carried states. `source`
    /// names it in errors.
    public static func restore(
        _ file: SafeTensors.File, source: String, model: Module, optimizer: Optimizer
    ) throws -> [String: StoredArray] {
        let kind = String(describing: type(of: optimizer))
        guard let saved = file.metadata["optimizer_kind"] else {
            throw BackpropError(.format, "\(source): not a training checkpoint (no optimizer_kind in its metadata)")
        }
        guard saved == kind else {
            throw BackpropError(.invalidArgument, "\(source) was saved with optimizer \(saved), this run uses \(kind)")
        }
        let state = split(file.tensors)
        let generators = try randomStates(state.random, of: model, source: source)
        let before = Checkpoint.stateDict(of: model)
        try Checkpoint.load(state.model, into: model, source: source)
        do {
            try optimizer.loadState(state.optimizer)
        } catch {
            try Checkpoint.load(before, into: model, source: "the model's previous state")
            throw error
        }
        for (random, bits) in generators { random.generator = SplitMix64(seed: UInt64(bitPattern: bits)) }
        return state.carried
    }

    public static func save(
        model: Module, optimizer: Optimizer, history: TrainingHistory, epochsDone: Int,
        metadata: [String: String], to url: URL
    ) throws {
        var fields = metadata
        fields["epochs_done"] = String(epochsDone)
        fields["history"] = String(decoding: try JSONEncoder().encode(history), as: UTF8.self)
        try write(model: model, optimizer: optimizer, metadata: fields, to: url)
    }

    /// Loads a checkpoint file into the model and optimizer (see `load(_:source:model:optimizer:)`).
    public static func load(from url: URL, model: Module, optimizer: Optimizer) throws -> Saved {
        try load(SafeTensors.read(contentsOf: url), source: url.path, model: model, optimizer: optimizer)
    }

    /// Loads an image-training checkpoint already read into the model and optimizer (see
    /// `restore`), with its epochs done and history.
    public static func load(
        _ file: SafeTensors.File, source: String, model: Module, optimizer: Optimizer
    ) throws -> Saved {
        guard let done = file.metadata["epochs_done"].flatMap(Int.init), let historyText = file.metadata["history"]
        else {
            throw BackpropError(
                .format, "\(source): not a training checkpoint (no epochs_done or history in its metadata)")
        }
        guard done >= 0 else { throw BackpropError(.format, "\(source): epochs_done is \(done), expected 0 or more") }
        let history: TrainingHistory
        do { history = try JSONDecoder().decode(TrainingHistory.self, from: Data(historyText.utf8)) } catch {
            throw BackpropError(.format, "\(source): the history in its metadata is not readable: \(error)")
        }
        _ = try restore(file, source: source, model: model, optimizer: optimizer)
        return Saved(epochsDone: done, history: history, metadata: file.metadata)
    }

    /// Each saved generator with the model's random state of its name. Every entry must be an int64
    /// scalar naming one of the model's; a generator with no entry (a file from before they were
    /// saved) keeps its state.
    static func randomStates(
        _ saved: [String: StoredArray], of model: Module, source: String
    ) throws -> [(RandomState, Int64)] {
        let states = Dictionary(model.namedRandomStates.map { ($0.name, $0.state) }) { a, _ in a }
        return try saved.keys.sorted().map { name in
            guard let random = states[name] else {
                throw BackpropError(
                    .shapeMismatch, "\(source) does not fit the model: unexpected \(randomPrefix)\(name)")
            }
            guard case .int64(let values) = saved[name]!.elements, saved[name]!.shape.isEmpty else {
                throw BackpropError(.format, "\(source): \(randomPrefix)\(name) must be an int64 scalar")
            }
            return (random, values[0])
        }
    }
}
