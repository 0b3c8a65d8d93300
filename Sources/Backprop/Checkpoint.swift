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
        for (name, counter) in model.namedCounters {
            state[name] = StoredArray(shape: [], elements: .int64([counter.value]))
        }
        return state
    }

    /// Loads `state` into the model, all or nothing: every parameter and buffer must be present
    /// with the model's shape and a float type (float64 rounds to float32), counters must be int64
    /// scalars, and no name may be left over; every value must be finite (NaN or infinite weights
    /// would give NaN results). A missing counter keeps its value, as PyTorch allows.
    /// `source` names the state in errors.
    public static func load(_ state: [String: StoredArray], into model: Module, source: String) throws {
        var problems: [String] = []
        var floats: [(String, (Tensor, String) throws -> Void, Tensor)] = []
        let targets: [(String, [Int], (Tensor, String) throws -> Void)] =
            model.namedParameters.map { entry in (entry.name, entry.parameter.value.shape, entry.parameter.load) }
            + model.namedBuffers.map { entry in (entry.name, entry.buffer.value.shape, entry.buffer.load) }
        for (name, shape, load) in targets {
            guard let array = state[name] else {
                problems.append("missing \(name)")
                continue
            }
            if case .int64 = array.elements {
                problems.append("\(name) is int64, expected a float tensor")
            } else if array.shape != shape {
                problems.append("\(name) has shape \(describe(array.shape)), the model's is \(describe(shape))")
            } else {
                let tensor = array.tensor
                if let bad = tensor.scalars.firstIndex(where: { !$0.isFinite }) {
                    problems.append("\(name) holds \(tensor.scalars[bad]) at element \(bad), expected finite numbers")
                } else {
                    floats.append((name, load, tensor))
                }
            }
        }
        var counts: [(Counter, Int64)] = []
        for (name, counter) in model.namedCounters {
            guard let array = state[name] else { continue }
            if case .int64(let values) = array.elements, array.shape.isEmpty {
                guard (0...maxCount).contains(values[0]) else {
                    problems.append("\(name) is \(values[0]), expected a count from 0 to 2^53")
                    continue
                }
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
