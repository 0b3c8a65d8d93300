import Backprop
import Foundation

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
