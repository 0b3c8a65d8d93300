import CKernels
import Glibc

/// The process-wide settings under which Backprop runs fastest. The library changes none of them
/// on its own: a program calls `configure()` once at its start; the `backprop` command does.
public enum ProcessSetup {
    /// The most memory the process has had resident so far, in bytes (getrusage's maximum RSS).
    public static var peakResidentBytes: Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024  // kilobytes on Linux
    }

    /// With `retainFreedMemory`, makes the C allocator keep freed blocks for reuse (glibc's
    /// `mallopt`: no mmap for large blocks, no heap trimming), as PyTorch's caching allocator does:
    /// fresh multi-megabyte tensors would page-fault on every call (measured: max-pooling backward on
    /// 100 MB, 102 ms with fresh pages, 29 ms with reused ones). The process then keeps its peak
    /// memory.
    public static func configure(retainFreedMemory: Bool = true) {
        if retainFreedMemory { bp_retain_freed_memory() }
    }
}
