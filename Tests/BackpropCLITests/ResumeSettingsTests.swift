import ArgumentParser
import Backprop
import Foundation
import Testing

@testable import backprop

/// A resumed run continues the same run: the options it is not given come from the checkpoint, and
/// one given with another value is refused, naming both.
@Suite struct ResumeSettingsTests {
    @Test func settingsComeFromTheCheckpointUnlessGiven() throws {
        var kept = try RunSettings(resuming: ["settings": #"{"--batch-size": "64", "--lr": "0.01"}"#])
        #expect(try kept.resolve("--batch-size", given: nil as Int?, default: 128) == 64)
        #expect(try kept.resolve("--lr", given: Float(0.01), default: 0.001) == 0.01)
        #expect(try kept.resolve("--seed", given: nil as UInt64?, default: 1) == 1)  // not saved: the default
        #expect(throws: ValidationError.self) { try kept.resolve("--lr", given: Float(0.02), default: 0.001) }
        do {
            _ = try kept.resolve("--batch-size", given: 32, default: 128)
        } catch {
            #expect(
                "\(error)".contains(
                    "--batch-size 32 contradicts the checkpoint, which was trained with --batch-size 64"))
        }
    }

    @Test func aNewRunRecordsWhatItUses() throws {
        var kept = try RunSettings(resuming: nil)
        #expect(try kept.resolve("--optimizer", given: nil, default: OptimizerName.adam) == .adam)
        #expect(try kept.resolveOptional("--clip-norm", given: nil as Float?, default: nil) == nil)
        let saved = try RunSettings(resuming: [kept.metadata.key: kept.metadata.value])
        #expect(saved.saved == ["--optimizer": "adam", "--clip-norm": "none"])
    }

    /// `backprop train` end to end on a few tiny images: the resumed run keeps --lr and
    /// --batch-size, and refuses another --lr.
    @Test func trainResumesWithItsSettings() throws {
        let data = try BadRunTests.data(train: 6, test: 2)
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("resume-\(UUID().uuidString)").path
        let common = ["--data", data, "--model", "flatten linear(4,2)", "--output", output]
        try Train.parse(common + ["--epochs", "1", "--lr", "0.01", "--batch-size", "2"]).run()
        try Train.parse(common + ["--epochs", "2", "--resume", output]).run()
        let file = try SafeTensors.read(contentsOf: URL(fileURLWithPath: output + "/checkpoint.safetensors"))
        let settings = try RunSettings(resuming: file.metadata).saved
        #expect(settings?["--lr"] == "0.01" && settings?["--batch-size"] == "2")
        #expect(file.metadata["epochs_done"] == "2")
        do {
            try Train.parse(common + ["--epochs", "3", "--resume", output, "--lr", "0.5"]).run()
            Issue.record("a contradicting --lr was accepted")
        } catch {
            #expect(Train.message(for: error).contains("--lr 0.5 contradicts the checkpoint"))
        }
    }
}
