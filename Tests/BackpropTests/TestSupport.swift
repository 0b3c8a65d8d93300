import Backprop
import Foundation
import Testing

/// `shared/fixtures`, beside the package checkout.
let fixturesDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("shared/fixtures")

/// A seeded random tensor with values in [low, high).
func randomTensor(_ shape: [Int], seed: UInt64, _ low: Float = -1, _ high: Float = 1) -> Tensor {
    var generator = SplitMix64(seed: seed)
    return try! Tensor.uniform(shape: shape, low: low, high: high, using: &generator)
}

/// Asserts that `body` throws a BackpropError of `kind` whose message contains every fragment.
func expectError(_ kind: BackpropError.Kind, mentioning fragments: [String],
                 sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected a \(kind) error mentioning \(fragments)", sourceLocation: sourceLocation)
    } catch let error as BackpropError {
        #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(error.message.contains(fragment), "'\(error.message)' should mention '\(fragment)'",
                    sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected a BackpropError, got \(error)", sourceLocation: sourceLocation)
    }
}

/// Runs the gradient check and records its report when it fails.
func expectGradientsCorrect(_ module: Module, input: Tensor, tolerance: Double = 1e-2,
                            sourceLocation: SourceLocation = #_sourceLocation) throws {
    let report = try GradientCheck.run(module, input: input, tolerance: tolerance)
    #expect(report.passed, "\(report)", sourceLocation: sourceLocation)
}
