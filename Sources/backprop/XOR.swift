import ArgumentParser
import Backprop
import BackpropFixtures
import BackpropTraining

struct XOR: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a 2-4-1 network on XOR with SGD and print what it learned."
    )

    @Option(help: "Full-batch SGD steps.") var steps = 2000
    @Option(help: "Seed of the weight initialisation.") var seed: UInt64 = 1
    @OptionGroup var threadOptions: ThreadOptions

    func run() throws {
        try threadOptions.apply()
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
        let result = try XORExample.train(steps: steps, seed: seed) { step, loss in
            print("step \(step): loss \(loss)")
        }
        for (input, (prediction, target)) in zip(XORExample.inputs, zip(result.predictions, XORExample.targets)) {
            print("xor(\(Int(input[0])), \(Int(input[1]))) = \(prediction)  (target \(Int(target)))")
        }
        print("accuracy \(Int(result.accuracy * 100))%, loss \(result.loss)")
        if result.accuracy < 1 { throw ExitCode(1) }
    }
}
