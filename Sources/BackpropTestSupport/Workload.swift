import Backprop
import Foundation

/// One entry of a workloads file (`shared/bench/workloads.json`): a name, an op, and the op's
/// sizes (n, c, h, w, k, r, s, stride, pad, groups, in, out, rows, d, classes, model, ...). The
/// benchmark runs them; the fuzzer checks their parser.
public struct Workload {
    public let name: String
    public let op: String
    public let fields: JSONFields

    /// Reads `{"workloads": [{"name": ..., "op": ..., ...}, ...]}`.
    public static func load(_ path: String) throws -> [Workload] {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw BackpropError(.format, "\(path): cannot read the workloads file: \(error.localizedDescription)")
        }
        return try decode(data, path: path)
    }

    /// The workloads a file's bytes list; `path` names it in errors.
    public static func decode(_ data: Data, path: String) throws -> [Workload] {
        struct File: Decodable { let workloads: [[String: JSONValue]] }
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: data) } catch {
            throw BackpropError(
                .format, "\(path): not a workloads file ({\"workloads\": [{\"name\", \"op\", ...}]}): \(error)")
        }
        return try file.workloads.enumerated().map { index, entry in
            let fields = JSONFields(entry, context: "\(path): workload \(index)")
            let name = try fields.string("name")
            return Workload(
                name: name, op: try fields.string("op"),
                fields: JSONFields(entry, context: "\(path): workload \(name)"))
        }
    }

    /// The fields that count something: each must be a whole number of at least 1 (pads and the
    /// like may be 0 and are checked by the layers).
    static let sizes: Set<String> = [
        "n", "c", "h", "w", "k", "r", "s", "stride", "groups", "in", "out", "rows", "d", "classes", "t", "dim",
        "num_embeddings", "input_size", "hidden_size", "num_layers", "output_size", "kernel_size",
    ]

    /// Throws, naming the field, when a size is 0, negative or not whole: the benchmark's small
    /// copies and reference checks divide by some of them.
    public func checkSizes() throws {
        for key in fields.fields.keys.sorted() where Self.sizes.contains(key) {
            guard let value = fields.fields[key]?.number, value >= 1, value == value.rounded(), value < 1e12 else {
                throw BackpropError(.invalidArgument, "\(fields.context): \(key) must be a whole number of at least 1")
            }
        }
    }
}
