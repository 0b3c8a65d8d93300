import ArgumentParser
import Backprop
import BackpropFixtures
import BackpropTraining
import Foundation

@main
struct BackpropCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backprop",
        abstract: "Train and check neural networks on the CPU.",
        subcommands: [Train.self, TrainText.self, Sample.self, Eval.self, Verify.self, XOR.self]
    )

    /// Refuses an OMP_NUM_THREADS that OpenMP cannot read before anything starts OpenMP (libomp
    /// would run with garbage thread counts, or abort), then `ProcessSetup.configure()`.
    static func main() {
        if let value = ProcessInfo.processInfo.environment["OMP_NUM_THREADS"],
            let problem = Threads.problem(withEnvironmentValue: value)
        {
            FileHandle.standardError.write(Data("Error: \(problem)\n".utf8))
            Foundation.exit(1)
        }
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
