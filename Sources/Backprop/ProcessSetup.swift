import CKernels
import Glibc

/// The process-wide settings under which Backprop runs fastest. The library changes none of them
/// on its own, except OpenBLAS's thread count, which the bits of every matrix product depend on
/// (its first product sets it to one: `bp_sgemm` hands OpenBLAS tiles from Backprop's own threads).
/// A program calls `configure()` once at its start; the `backprop` command does.
public enum ProcessSetup {
    /// The most memory the process has had resident so far, in bytes (getrusage's maximum RSS).
    public static var peakResidentBytes: Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024  // kilobytes on Linux
    }

    /// Sets OpenBLAS to one thread and, with `retainFreedMemory`, makes the C allocator keep freed
    /// blocks for reuse (glibc's `mallopt`: no mmap for large blocks, no heap trimming), as PyTorch's
    /// caching allocator does: fresh multi-megabyte tensors would page-fault on every call (measured:
    /// max-pooling backward on 100 MB, 102 ms with fresh pages, 29 ms with reused ones). The process
    /// then keeps its peak memory. Returns `BLASRuntime.betterCoreType`: the OPENBLAS_CORETYPE that a
    /// restarted process would need for faster matrix products, or nil.
    @discardableResult
    public static func configure(retainFreedMemory: Bool = true) -> String? {
        bp_blas_single_threaded()
        if retainFreedMemory { bp_retain_freed_memory() }
        return BLASRuntime.betterCoreType
    }
}
