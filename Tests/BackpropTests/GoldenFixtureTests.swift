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
}
