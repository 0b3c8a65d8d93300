import Backprop
import Foundation

/// The command's process set-up: a refusal of an OMP_NUM_THREADS that OpenMP cannot read,
/// `ProcessSetup.configure()`, then, when OpenBLAS loaded kernels
/// narrower than the CPU allows and OPENBLAS_CORETYPE is unset, a restart of the same command with it
/// set (OpenBLAS reads it only when it loads). A value the user set is never overridden: then, or
/// when the restart fails, it says so on stderr and carries on with the slower kernels.
enum ProcessLaunch {
    static func configure() {
        // Before anything starts OpenMP, which would read a bad value as garbage thread counts.
        if let value = ProcessInfo.processInfo.environment["OMP_NUM_THREADS"],
            let problem = Threads.problem(withEnvironmentValue: value)
        {
            FileHandle.standardError.write(Data("Error: \(problem)\n".utf8))
            exit(1)
        }
        guard let better = ProcessSetup.configure() else { return }
        if ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil {
            setenv("OPENBLAS_CORETYPE", better, 1)
            execv("/proc/self/exe", CommandLine.unsafeArgv)
            unsetenv("OPENBLAS_CORETYPE")  // execv returned: it failed
        }
        warnSlowBLAS(better)
    }

    static func warnSlowBLAS(_ better: String) {
        FileHandle.standardError.write(
            Data(
                ("backprop: OpenBLAS loaded its \(BLASRuntime.coreName) kernels, but this CPU "
                    + "supports \(better): matrix products run several times slower. Start with OPENBLAS_CORETYPE=\(better).\n")
                    .utf8))
    }
}
