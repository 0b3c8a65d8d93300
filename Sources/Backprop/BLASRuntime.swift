import CKernels
import Foundation

/// Which OpenBLAS kernels the process runs, and the remedy when they are slower than the CPU allows.
///
/// OpenBLAS 0.3.21 (Debian 12) does not recognise some CPUs and loads its Prescott (SSE3) kernels,
/// about 5x slower than its AVX-512 ones. It reads OPENBLAS_CORETYPE only when it loads, so the
/// remedy is to start the process with that variable set. The library warns once on stderr at its
/// first matrix product; programs call `relaunchWithFastKernelsIfNeeded()` first thing in `main`.
public enum BLASRuntime {
    /// The core whose kernels OpenBLAS loaded ("Haswell", "SkylakeX", "Prescott", ...).
    public static var coreName: String { String(cString: bp_blas_corename()) }

    /// OpenBLAS's description of its build (version, threading, DYNAMIC_ARCH).
    public static var configuration: String { String(cString: bp_blas_config()) }

    /// The OPENBLAS_CORETYPE that would give faster kernels on this CPU, or nil when OpenBLAS
    /// already uses kernels as wide as the CPU allows.
    public static var betterCoreType: String? { bp_blas_check(0).map { String(cString: $0) } }

    /// When OpenBLAS fell back to kernels narrower than the CPU allows and the user has not set
    /// OPENBLAS_CORETYPE, re-executes this program with it set; never overrides a value the user set.
    /// Returns when no restart is needed (or the restart failed, in which case the first matrix
    /// product warns).
    public static func relaunchWithFastKernelsIfNeeded() {
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil, let better = betterCoreType else { return }
        setenv("OPENBLAS_CORETYPE", better, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        unsetenv("OPENBLAS_CORETYPE")  // execv returned: it failed; carry on with the slow kernels
    }
}
