import CKernels

/// The thread count of Backprop's kernels (OpenMP's). It starts from OMP_NUM_THREADS, or the core
/// count when that is unset.
/// Results are bit-identical for any count.
public enum Threads {
    public static var count: Int {
        get { Int(bp_num_threads()) }
        set { bp_set_num_threads(Int32(max(newValue, 1))) }
    }

    /// What is wrong with an OMP_NUM_THREADS value, or nil when OpenMP can use it: a comma-separated
    /// list of whole numbers of 1 or more (the threads at each nesting level). libomp reads any other
    /// value as garbage thread counts (runs then abort out of memory), so a program should refuse to
    /// start with one: the `backprop` command does.
    public static func problem(withEnvironmentValue value: String) -> String? {
        let levels = value.split(separator: ",", omittingEmptySubsequences: false)
        guard
            levels.allSatisfy({ level in
                Int(level.filter { !$0.isWhitespace }).map { (1...65536).contains($0) } ?? false
            })
        else {
            return "OMP_NUM_THREADS=\(value) is not a thread count: expected a whole number from 1 to 65536 "
                + "(or a comma-separated list of them); unset it to use every core"
        }
        return nil
    }

    /// Whether the kernels were built with OpenMP (the package's default `OpenMP` trait).
    public static var openMP: Bool { bp_has_openmp() != 0 }
}
