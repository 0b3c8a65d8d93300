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
}
