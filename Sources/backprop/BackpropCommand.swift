import ArgumentParser
import Backprop
import BackpropFixtures
import BackpropTraining

@main
struct BackpropCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backprop",
        abstract: "Train and check neural networks on the CPU.",
        subcommands: [Train.self, TrainText.self, Sample.self, Eval.self, Verify.self, XOR.self]
    )

    static func main() {
        ProcessSetup.configure()
        main(nil)
    }
}

/// Common options of the subcommands.
struct ThreadOptions: ParsableArguments {
    @Option(help: "Threads for the kernels (default: OMP_NUM_THREADS, or every core).")
    var threads: Int?

    func apply() throws {
        guard let threads else { return }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        Threads.count = threads
    }
}
