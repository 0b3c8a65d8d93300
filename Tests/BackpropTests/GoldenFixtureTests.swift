import Backprop
import Foundation
import Testing

/// The PyTorch golden cases of shared/fixtures, read from that path.
@Suite struct GoldenFixtureTests {
    /// Ops whose modules are not implemented yet; every other case must pass.
    static let notYetImplemented: Set<String> = [
        "batchnorm", "layernorm",
    ]

    @Test func everySupportedCasePasses() throws {
        let suite = try FixtureSuite(directory: fixturesDirectory)
        #expect(suite.cases.count >= 7)
        var passed = 0
        for fixture in suite.cases {
            let result = suite.run(fixture)
            switch result.verdict {
            case .passed: passed += 1
            case .unsupported:
                let isNetworkOfMissingLayers = fixture.op == "network"
                #expect(Self.notYetImplemented.contains(fixture.op) || isNetworkOfMissingLayers, "\(result)")
            default:
                Issue.record("\(result)")
            }
        }
        #expect(passed >= 7, "linear, relu, sigmoid, tanh and the three losses")
    }

    @Test func aWrongExpectationFails() throws {
        let suite = try FixtureSuite(directory: fixturesDirectory)
        let relu = try #require(suite.cases.first { $0.op == "relu" })
        // Compare relu's computed outputs against sigmoid's expected files: must fail.
        let sigmoid = try #require(suite.cases.first { $0.op == "sigmoid" })
        let swapped = try JSONDecoder().decode(Fixture.self, from: JSONSerialization.data(withJSONObject: [
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
}
