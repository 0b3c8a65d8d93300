import ArgumentParser
import Backprop
import BackpropFixtures
import BackpropTraining
import Foundation

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the golden cases of a fixture directory and compare with their expected outputs.",
        discussion:
            "One line per case (PASS, FAIL or UNSUPPORTED, which counts as failed), then 'N passed, M failed'. Exits 1 if any failed."
    )

    @Argument(help: "A directory holding manifest.json and its .npy files.")
    var directory: String

    @Flag(help: "Append a hash of the exact bits of each case's computed outputs (compare runs across thread counts).")
    var digest = false

    @OptionGroup var threadOptions: ThreadOptions

    func run() throws {
        try threadOptions.apply()
        let suite = try FixtureSuite(directory: URL(fileURLWithPath: directory))
        var passed = 0
        for fixture in suite.cases {
            let result = suite.run(fixture)
            if result.passed { passed += 1 }
            let hash = digest ? result.digest.map { " digest " + String($0, radix: 16) } ?? " digest -" : ""
            print("\(result)\(hash)")
        }
        let failed = suite.cases.count - passed
        print("\(passed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode(1) }
    }
}
