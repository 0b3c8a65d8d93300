import Testing

@testable import backprop

/// The command line refuses settings that would otherwise be ignored or silently change the run.
@Suite struct TrainOptionTests {
    /// Parsing runs the command's validation; the message names the option.
    static func refusal(_ arguments: [String]) -> String? {
        do {
            _ = try Train.parse(arguments)
            return nil
        } catch {
            return Train.message(for: error)
        }
    }

    @Test(arguments: [
        (["--l1=-1"], "--l1 must be a finite number >= 0, got -1.0"),
        (["--l2=-1"], "--l2 must be a finite number >= 0, got -1.0"),
        (["--l1", "-1"], "Missing value for '--l1 <l1>'"),  // "-1" alone reads as an option
        (["--l2", "nan"], "--l2 must be a finite number >= 0, got nan"),
        (["--warmup", "2", "--schedule", "constant"], "--warmup applies to the cosine schedule only"),
        (["--warmup", "2", "--schedule", "step"], "--warmup applies to the cosine schedule only"),
        (["--micro-batches", "0"], "--micro-batches must be positive"),
        (["--precision", "fp16"], "Please provide one of 'fp32' and 'bf16'"),
    ])
    func badSettingsAreRefused(arguments: [String], message: String) {
        let refused = Self.refusal(arguments)
        #expect(refused?.contains(message) == true, "\(arguments): \(refused ?? "accepted")")
    }

    @Test func goodSettingsAreAccepted() {
        #expect(Self.refusal(["--l1", "0.001", "--l2", "0", "--warmup", "1", "--schedule", "cosine"]) == nil)
        #expect(Self.refusal(["--micro-batches", "4", "--sync-batchnorm"]) == nil)
    }

    @Test func trainTextTakesThePrecisionsTrainTakes() {
        func refusal(_ arguments: [String]) -> String? {
            do {
                _ = try TrainText.parse(arguments)
                return nil
            } catch {
                return TrainText.message(for: error)
            }
        }
        #expect(refusal(["--precision", "bf16"]) == nil)
        let refused = refusal(["--precision", "fp16"])
        #expect(refused?.contains("Please provide one of 'fp32' and 'bf16'") == true, "\(refused ?? "accepted")")
    }
}
