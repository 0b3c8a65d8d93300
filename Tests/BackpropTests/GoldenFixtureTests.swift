import Backprop
import BackpropFixtures
import BackpropTestSupport
import Foundation
import Testing

/// The PyTorch golden cases of shared/fixtures and shared/fixtures/sequence, read from those paths.
@Suite struct GoldenFixtureTests {
    @Test(arguments: [("", 31), ("sequence", 12)])
    func everyCasePasses(folder: String, atLeast count: Int) throws {
        let suite = try FixtureSuite(directory: fixturesDirectory.appendingPathComponent(folder))
        #expect(suite.cases.count >= count)
        for fixture in suite.cases {
            let result = suite.run(fixture)
            #expect(result.passed, "\(result)")
        }
    }

    @Test func aWrongExpectationFails() throws {
        let suite = try FixtureSuite(directory: fixturesDirectory)
        let relu = try #require(suite.cases.first { $0.op == "relu" })
        // Compare relu's computed outputs against sigmoid's expected files: must fail.
        let sigmoid = try #require(suite.cases.first { $0.op == "sigmoid" })
        let swapped = try JSONDecoder().decode(
            Fixture.self,
            from: JSONSerialization.data(withJSONObject: [
                "name": "swapped", "op": "relu", "params": [:] as [String: String],
                "inputs": relu.inputs, "outputs": sigmoid.outputs,
            ]))
        #expect(!suite.run(swapped).passed)
    }

    @Test func missingManifestIsAClearError() {
        expectError(.format, mentioning: ["/nonexistent/manifest.json", "cannot read"]) {
            _ = try FixtureSuite(directory: URL(fileURLWithPath: "/nonexistent"))
        }
    }

    /// Nothing to check is not a pass: an empty manifest is refused, a case without outputs fails.
    @Test func emptyWorkIsNotASuccess() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fixtures-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Data(#"{"cases": []}"#.utf8).write(to: directory.appendingPathComponent("manifest.json"))
        expectError(.format, mentioning: ["manifest.json", "no cases"]) { _ = try FixtureSuite(directory: directory) }

        let suite = try FixtureSuite(directory: fixturesDirectory)
        let relu = try #require(suite.cases.first { $0.op == "relu" })
        let bare = try JSONDecoder().decode(
            Fixture.self,
            from: JSONSerialization.data(withJSONObject: [
                "name": "bare", "op": "relu", "params": [:] as [String: String], "inputs": relu.inputs,
                "outputs": [:] as [String: String],
            ]))
        let result = suite.run(bare)
        #expect(!result.passed && "\(result)".contains("no outputs"))
    }
}

/// The benchmark refuses a workload whose sizes cannot be: it would divide by them or trap.
@Suite struct WorkloadTests {
    @Test(arguments: [
        (#"{"name": "neg", "op": "linear", "n": -4, "in": 8, "out": 4}"#, "n must be a whole number"),
        (
            #"{"name": "g0", "op": "conv2d", "n": 1, "c": 4, "h": 8, "w": 8, "k": 4, "r": 3, "s": 3, "groups": 0}"#,
            "groups must be a whole number"
        ),
        (#"{"name": "c0", "op": "softmax_cross_entropy", "n": 4, "classes": 0}"#, "classes must be a whole number"),
    ])
    func badSizesAreRefused(entry: String, message: String) throws {
        let workloads = try Workload.decode(Data(#"{"workloads": [\#(entry)]}"#.utf8), path: "w.json")
        expectError(.invalidArgument, mentioning: ["w.json", message]) { try workloads[0].checkSizes() }
    }

    @Test func goodSizesPass() throws {
        let workloads = try Workload.decode(
            Data(#"{"workloads": [{"name": "ok", "op": "linear", "n": 4, "in": 8, "out": 4, "pad": 0}]}"#.utf8),
            path: "w.json")
        try workloads[0].checkSizes()
    }
}
