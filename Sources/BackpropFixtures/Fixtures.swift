import Backprop
import Foundation

/// Golden cases computed by PyTorch (`shared/fixtures`): a `manifest.json` of cases, each an op,
/// its params, and `.npy` inputs and expected outputs by role. `FixtureSuite` runs every case
/// through Backprop's public modules and compares each expected output with the rule
/// max|a − b| ≤ 1e-4 · max|b| + 1e-5 per tensor.
public struct Fixture: Decodable, Sendable {
    public let name: String
    public let op: String
    public let params: [String: JSONValue]
    public let inputs: [String: String]
    public let outputs: [String: String]
}

/// The outcome of one case.
public struct FixtureResult: Sendable, CustomStringConvertible {
    public enum Verdict: Sendable, Equatable {
        case passed
        /// The first tensor outside the rule, its error and tolerance.
        case failed(tensor: String, error: Double, tolerance: Double)
        /// The case ran into an error (a missing file, a shape the module refused).
        case error(String)
        /// The op (or a layer of the network) is not implemented.
        case unsupported(String)
    }

    public let name: String
    public let verdict: Verdict
    /// FNV-1a over the exact bits of every computed output, in role order; nil unless it ran.
    public let digest: UInt64?

    public var passed: Bool { verdict == .passed }

    public var description: String {
        switch verdict {
        case .passed: return "PASS \(name)"
        case .failed(let tensor, let error, let tolerance):
            return "FAIL \(name): \(tensor) err \(error.formatted3) tol \(tolerance.formatted3)"
        case .error(let message): return "FAIL \(name): \(message)"
        case .unsupported(let op): return "UNSUPPORTED \(name) (\(op))"
        }
    }
}

public struct FixtureSuite: Sendable {
    public let directory: URL
    public let cases: [Fixture]

    /// Reads `directory/manifest.json`.
    public init(directory: URL) throws {
        self.directory = directory
        let url = directory.appendingPathComponent("manifest.json")
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw BackpropError(.format, "\(url.path): cannot read the fixture manifest: \(error.localizedDescription)")
        }
        cases = try Self.cases(in: data, source: url.path)
    }

    /// The cases a manifest's bytes list (at least one), or an error naming `source`.
    public static func cases(in data: Data, source: String) throws -> [Fixture] {
        struct Manifest: Decodable { let cases: [Fixture] }
        let cases: [Fixture]
        do { cases = try JSONDecoder().decode(Manifest.self, from: data).cases } catch {
            throw BackpropError(
                .format,
                "\(source): not a fixture manifest ({\"cases\": [{name, op, params, inputs, outputs}]}): \(error)")
        }
        guard !cases.isEmpty else { throw BackpropError(.format, "\(source): the manifest has no cases") }
        return cases
    }

    /// Runs one case: computes its outputs and compares each with the expected file.
    public func run(_ fixture: Fixture) -> FixtureResult {
        guard let operation = FixtureOperations.operation(fixture.op) else {
            return FixtureResult(name: fixture.name, verdict: .unsupported(fixture.op), digest: nil)
        }
        let context = FixtureContext(fixture: fixture, directory: directory)
        let computed: [String: Tensor]
        do {
            computed = try operation(context)
        } catch let error as BackpropError where error.kind == .unsupported {
            return FixtureResult(
                name: fixture.name, verdict: .unsupported("\(fixture.op): \(error.message)"), digest: nil)
        } catch {
            return FixtureResult(name: fixture.name, verdict: .error("\(error)"), digest: nil)
        }
        let digest = Self.digest(of: computed)
        guard !fixture.outputs.isEmpty else {
            return FixtureResult(
                name: fixture.name, verdict: .error("the case lists no outputs to compare"), digest: digest)
        }
        for role in fixture.outputs.keys.sorted() {
            guard let actual = computed[role] else {
                return FixtureResult(name: fixture.name, verdict: .error("\(role) was not computed"), digest: digest)
            }
            do {
                let expected = try context.expected(role)
                guard expected.shape == actual.shape || (expected.shape.reduce(1, *) == 1 && actual.count == 1) else {
                    return FixtureResult(
                        name: fixture.name,
                        verdict: .error(
                            "\(role) has shape \(describe(actual.shape)), expected \(describe(expected.shape))"),
                        digest: digest)
                }
                let (error, tolerance) = Self.compare(actual.scalars, expected.doubles)
                if !(error <= tolerance) {
                    return FixtureResult(
                        name: fixture.name,
                        verdict: .failed(tensor: role, error: error, tolerance: tolerance), digest: digest)
                }
            } catch {
                return FixtureResult(name: fixture.name, verdict: .error("\(error)"), digest: digest)
            }
        }
        return FixtureResult(name: fixture.name, verdict: .passed, digest: digest)
    }

    /// Runs every case in manifest order.
    public func runAll() -> [FixtureResult] { cases.map(run) }

    /// max|a − b| and its tolerance 1e-4 · max|b| + 1e-5; NaN errors never pass.
    static func compare(_ actual: [Float], _ expected: [Double]) -> (error: Double, tolerance: Double) {
        var error = 0.0, scale = 0.0
        for (a, b) in zip(actual, expected) {
            let difference = abs(Double(a) - b)
            error = difference.isNaN ? .nan : max(error, difference)
            scale = max(scale, abs(b))
            if error.isNaN { break }
        }
        return (error, 1e-4 * scale + 1e-5)
    }

    static func digest(of outputs: [String: Tensor]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for role in outputs.keys.sorted() {
            for byte in role.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            for value in outputs[role]!.scalars {
                var bits = value.bitPattern
                for _ in 0..<4 {
                    hash = (hash ^ UInt64(bits & 0xff)) &* 0x100_0000_01b3
                    bits >>= 8
                }
            }
        }
        return hash
    }
}

/// What an op implementation reads from a case: its params and input tensors.
struct FixtureContext {
    let fixture: Fixture
    let directory: URL

    var params: JSONFields { JSONFields(fixture.params, context: "fixture \(fixture.name)") }

    func input(_ role: String) throws -> Tensor { try array(role, in: fixture.inputs).tensor }

    func optionalInput(_ role: String) throws -> Tensor? {
        fixture.inputs[role] == nil ? nil : try input(role)
    }

    func labels(_ role: String = "labels") throws -> [Int] {
        try array(role, in: fixture.inputs).integers(file: fixture.inputs[role] ?? role)
    }

    func expected(_ role: String) throws -> StoredArray { try array(role, in: fixture.outputs) }

    private func array(_ role: String, in files: [String: String]) throws -> StoredArray {
        guard let file = files[role] else {
            throw BackpropError(.format, "fixture \(fixture.name): no '\(role)' file")
        }
        return try NPY.read(contentsOf: directory.appendingPathComponent(file))
    }
}
