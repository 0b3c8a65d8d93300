import Foundation

/// A model's state as PyTorch's `state_dict()` holds it: every parameter and buffer (float32) and
/// counter (int64) by its `nn.Sequential` name, saved as `.safetensors`. A file saved here loads
/// with `safetensors.torch.load_file` + `load_state_dict` into the same model built by
/// `shared/bench/modelspec.py`, and a file saved from there loads here.
public enum Checkpoint {
    /// The model's state: parameters and buffers as float32, counters as int64.
    public static func stateDict(of model: Module) -> [String: StoredArray] {
        var state: [String: StoredArray] = [:]
        for (name, parameter) in model.namedParameters { state[name] = StoredArray(parameter.value) }
        for (name, buffer) in model.namedBuffers { state[name] = StoredArray(buffer.value) }
        for (name, counter) in model.namedCounters { state[name] = StoredArray(shape: [], elements: .int64([counter.value])) }
        return state
    }

    /// Loads `state` into the model, all or nothing: every parameter and buffer must be present
    /// with the model's shape and a float type (float64 rounds to float32), counters must be int64
    /// scalars, and no name may be left over. A missing counter keeps its value, as PyTorch allows.
    /// `source` names the state in errors.
    public static func load(_ state: [String: StoredArray], into model: Module, source: String) throws {
        var problems: [String] = []
        var floats: [(String, (Tensor, String) throws -> Void, Tensor)] = []
        let targets: [(String, [Int], (Tensor, String) throws -> Void)] =
            model.namedParameters.map { entry in (entry.name, entry.parameter.value.shape, entry.parameter.load) }
            + model.namedBuffers.map { entry in (entry.name, entry.buffer.value.shape, entry.buffer.load) }
        for (name, shape, load) in targets {
            guard let array = state[name] else { problems.append("missing \(name)"); continue }
            if case .int64 = array.elements {
                problems.append("\(name) is int64, expected a float tensor")
            } else if array.shape != shape {
                problems.append("\(name) has shape \(describe(array.shape)), the model's is \(describe(shape))")
            } else {
                floats.append((name, load, array.tensor))
            }
        }
        var counts: [(Counter, Int64)] = []
        for (name, counter) in model.namedCounters {
            guard let array = state[name] else { continue }
            if case .int64(let values) = array.elements, array.shape.isEmpty {
                counts.append((counter, values[0]))
            } else {
                problems.append("\(name) must be an int64 scalar, got shape \(describe(array.shape))")
            }
        }
        let known = Set(targets.map(\.0) + model.namedCounters.map(\.name))
        problems += state.keys.filter { !known.contains($0) }.sorted().map { "unexpected \($0)" }
        guard problems.isEmpty else {
            throw BackpropError(.shapeMismatch, "\(source) does not fit the model: " + problems.joined(separator: "; "))
        }
        for (name, load, tensor) in floats { try load(tensor, name) }
        for (counter, value) in counts { counter.value = value }
    }

    /// Writes the model's state to a `.safetensors` file, atomically, with `metadata`.
    public static func save(_ model: Module, to url: URL, metadata: [String: String] = [:]) throws {
        try SafeTensors.write(SafeTensors.File(tensors: stateDict(of: model), metadata: metadata), to: url)
    }

    /// Loads a `.safetensors` file into the model (see `load(_:into:source:)`); returns its metadata.
    @discardableResult
    public static func load(from url: URL, into model: Module) throws -> [String: String] {
        let file = try SafeTensors.read(contentsOf: url)
        try load(file.tensors, into: model, source: url.path)
        return file.metadata
    }
}

/// A training run's state in one `.safetensors` file, so a resumed run continues exactly where it
/// stopped: the model's state under its own names, the optimizer's under "optimizer.<name>", and in
/// the metadata the epochs done, the optimizer's kind and the history as JSON. One file, written
/// atomically, so the model and optimizer can never come from different epochs.
public enum TrainingCheckpoint {
    public struct Saved {
        public let epochsDone: Int
        public let history: TrainingHistory
        /// Everything the run put in the metadata (model spec, optimizer, ...).
        public let metadata: [String: String]
    }

    /// Where the optimizer's entries sit among the file's tensors.
    static let optimizerPrefix = "optimizer."

    /// A checkpoint's tensors split into the model's state and the optimizer's (prefix removed).
    /// A plain model file has no optimizer part.
    public static func split(_ tensors: [String: StoredArray]) -> (model: [String: StoredArray], optimizer: [String: StoredArray]) {
        var model: [String: StoredArray] = [:], optimizer: [String: StoredArray] = [:]
        for (name, array) in tensors {
            if name.hasPrefix(optimizerPrefix) { optimizer[String(name.dropFirst(optimizerPrefix.count))] = array } else { model[name] = array }
        }
        return (model, optimizer)
    }

    public static func save(model: Module, optimizer: Optimizer, history: TrainingHistory, epochsDone: Int,
                            metadata: [String: String], to url: URL) throws {
        var tensors = Checkpoint.stateDict(of: model)
        for (name, array) in optimizer.state { tensors[optimizerPrefix + name] = array }
        var fields = metadata
        fields["epochs_done"] = String(epochsDone)
        fields["optimizer_kind"] = String(describing: type(of: optimizer))
        fields["history"] = String(decoding: try JSONEncoder().encode(history), as: UTF8.self)
        try SafeTensors.write(SafeTensors.File(tensors: tensors, metadata: fields), to: url)
    }

    /// Loads a checkpoint file into the model and optimizer (see `load(_:source:model:optimizer:)`).
    public static func load(from url: URL, model: Module, optimizer: Optimizer) throws -> Saved {
        try load(SafeTensors.read(contentsOf: url), source: url.path, model: model, optimizer: optimizer)
    }

    /// Loads a checkpoint already read into the model and optimizer (which must be of the kind that
    /// saved it), changing nothing when anything does not fit. `source` names it in errors.
    public static func load(_ file: SafeTensors.File, source: String, model: Module, optimizer: Optimizer) throws -> Saved {
        let kind = String(describing: type(of: optimizer))
        guard let saved = file.metadata["optimizer_kind"], let done = file.metadata["epochs_done"].flatMap(Int.init),
              let historyText = file.metadata["history"] else {
            throw BackpropError(.format, "\(source): not a training checkpoint (no epochs_done, optimizer_kind or history in its metadata)")
        }
        guard saved == kind else {
            throw BackpropError(.invalidArgument, "\(source) was saved with optimizer \(saved), this run uses \(kind)")
        }
        let history: TrainingHistory
        do { history = try JSONDecoder().decode(TrainingHistory.self, from: Data(historyText.utf8)) } catch {
            throw BackpropError(.format, "\(source): the history in its metadata is not readable: \(error)")
        }
        let state = split(file.tensors)
        let before = Checkpoint.stateDict(of: model)
        try Checkpoint.load(state.model, into: model, source: source)
        do {
            try optimizer.loadState(state.optimizer)
        } catch {
            try Checkpoint.load(before, into: model, source: "the model's previous state")
            throw error
        }
        return Saved(epochsDone: done, history: history, metadata: file.metadata)
    }
}
