import CKernels

/// Which OpenBLAS kernels the process runs.
///
/// OpenBLAS 0.3.21 (Debian 12) does not recognise some CPUs and loads its Prescott (SSE3) kernels,
/// about 5x slower than its AVX-512 ones. It reads OPENBLAS_CORETYPE only when it loads, so the
/// remedy is to start the process with that variable set (the `backprop` command restarts itself so).
public enum BLASRuntime {
    /// The core whose kernels OpenBLAS loaded ("Haswell", "SkylakeX", "Prescott", ...).
    public static var coreName: String { String(cString: bp_blas_corename()) }

    /// OpenBLAS's description of its build (version, threading, DYNAMIC_ARCH).
    public static var configuration: String { String(cString: bp_blas_config()) }

    /// The OPENBLAS_CORETYPE that would give faster kernels on this CPU, or nil when OpenBLAS
    /// already uses kernels as wide as the CPU allows.
    public static var betterCoreType: String? { bp_blas_check().map { String(cString: $0) } }
}
