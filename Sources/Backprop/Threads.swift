import CKernels

/// The thread count of Backprop's kernels. One setting governs both the OpenMP kernels and
/// OpenBLAS; it starts from OMP_NUM_THREADS, or the core count when that is unset.
/// Results are bit-identical for any count.
public enum Threads {
    public static var count: Int {
        get { Int(bp_num_threads()) }
        set { bp_set_num_threads(Int32(max(newValue, 1))) }
    }

    /// Whether the kernels were built with OpenMP (the package's default `OpenMP` trait).
    public static var openMP: Bool { bp_has_openmp() != 0 }
}
