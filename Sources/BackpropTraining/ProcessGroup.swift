import Backprop
import Foundation

#if MPI
    import CMPI
#endif

/// The processes a data-parallel training run is spread over, and the one collective it needs.
public protocol ProcessGroup: AnyObject {
    /// This process's index, 0 ..< size; rank 0 prints and writes the run's files.
    var rank: Int { get }
    var size: Int { get }
    /// Every process's `local` (of the same count on each), concatenated in rank order, on every process.
    func allGather(_ local: [Double]) throws -> [Double]
    /// Every process's `local`, of counts[rank] values on process `rank`, concatenated in rank order.
    func allGather(_ local: [Float], counts: [Int]) throws -> [Float]
    /// All-to-all: `send` holds a block of sendCounts[d] values for each process d in order; the
    /// result holds the block each process s sent this one (receiveCounts[s] values), in rank order.
    func exchange(_ send: [Float], sendCounts: [Int], receiveCounts: [Int]) throws -> [Float]
    /// Ends every process of the job with exit status `code` (one that failed alone: the others
    /// would wait for it forever).
    func abort(_ code: Int32) -> Never
    /// Ends this process's part in the job (MPI_Finalize), before a normal exit.
    func finish()
}

/// A run of one process.
public final class SingleProcess: ProcessGroup {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allGather(_ local: [Double]) -> [Double] { local }
    public func allGather(_ local: [Float], counts: [Int]) -> [Float] { local }
    public func exchange(_ send: [Float], sendCounts: [Int], receiveCounts: [Int]) -> [Float] { send }
    public func abort(_ code: Int32) -> Never { exit(code) }
    public func finish() {}
}

/// The processes of an `mpirun` job, when this build has the MPI trait.
public enum MPIWorld {
    /// The number of processes the launcher started, from the environment Open MPI (or another
    /// PMI-based launcher) gives each one; 1 when not started by one.
    public static var launchedSize: Int {
        let environment = ProcessInfo.processInfo.environment
        for name in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"] {
            if let value = environment[name].flatMap(Int.init), value > 0 { return value }
        }
        return 1
    }

    /// Whether this build can run as one of several MPI processes.
    public static var isAvailable: Bool {
        #if MPI
            true
        #else
            false
        #endif
    }

    /// The group of this job's processes: after MPI_Init when a launcher started several, else a
    /// single process. Throws when several were started but this build has no MPI.
    public static func start() throws -> ProcessGroup {
        let launched = launchedSize
        guard launched > 1 else { return SingleProcess() }
        #if MPI
            return try MPIProcessGroup()
        #else
            throw BackpropError(
                .invalidArgument,
                "started as one of \(launched) MPI processes, but this backprop was built without MPI: "
                    + "build it with `swift build -c release --traits MPI` (Open MPI: apt-get install openmpi-bin libopenmpi-dev)"
            )
        #endif
    }
}

#if MPI
    /// MPI_COMM_WORLD. Collectives abort the job on failure (MPI's default error handler); `abort`
    /// ends every process when one fails on its own, so none waits for it forever.
    public final class MPIProcessGroup: ProcessGroup {
        public let rank: Int
        public let size: Int

        init() throws {
            var rank: Int32 = 0, size: Int32 = 0
            let code = bp_mpi_start(&rank, &size)
            guard code == 0 else { throw BackpropError(.invalidArgument, "MPI_Init failed with error code \(code)") }
            (self.rank, self.size) = (Int(rank), Int(size))
        }

        public func allGather(_ local: [Double]) throws -> [Double] {
            guard !local.isEmpty else { return [] }
            guard local.count * size <= Int(Int32.max) else {
                throw BackpropError(
                    .invalidArgument,
                    "MPI: \(local.count) values from each of \(size) processes exceed one collective's \(Int32.max)")
            }
            var all = [Double](repeating: 0, count: local.count * size)
            let code = all.withUnsafeMutableBufferPointer { all in
                local.withUnsafeBufferPointer {
                    bp_mpi_allgather_double(all.baseAddress!, $0.baseAddress!, Int32(local.count))
                }
            }
            guard code == 0 else {
                throw BackpropError(.invalidArgument, "MPI_Allgather failed with error code \(code)")
            }
            return all
        }

        public func allGather(_ local: [Float], counts: [Int]) throws -> [Float] {
            let (counts32, displacements) = try Self.layout(counts)
            guard counts.reduce(0, +) > 0 else { return [] }
            var all = [Float](repeating: 0, count: counts.reduce(0, +))
            let code = all.withUnsafeMutableBufferPointer { all in
                (local.isEmpty ? [0] : local).withUnsafeBufferPointer {
                    bp_mpi_allgatherv_float(
                        all.baseAddress!, $0.baseAddress!, counts32, displacements, Int32(local.count))
                }
            }
            guard code == 0 else {
                throw BackpropError(.invalidArgument, "MPI_Allgatherv failed with error code \(code)")
            }
            return all
        }

        public func exchange(_ send: [Float], sendCounts: [Int], receiveCounts: [Int]) throws -> [Float] {
            let (sent, sendDisplacements) = try Self.layout(sendCounts)
            let (received, receiveDisplacements) = try Self.layout(receiveCounts)
            var all = [Float](repeating: 0, count: max(receiveCounts.reduce(0, +), 1))
            let code = all.withUnsafeMutableBufferPointer { all in
                (send.isEmpty ? [0] : send).withUnsafeBufferPointer {
                    bp_mpi_alltoallv_float(
                        all.baseAddress!, received, receiveDisplacements, $0.baseAddress!, sent, sendDisplacements)
                }
            }
            guard code == 0 else {
                throw BackpropError(.invalidArgument, "MPI_Alltoallv failed with error code \(code)")
            }
            return Array(all.prefix(receiveCounts.reduce(0, +)))
        }

        /// MPI's int counts and displacements (running sums) for blocks of `counts` values.
        private static func layout(_ counts: [Int]) throws -> (counts: [Int32], displacements: [Int32]) {
            guard counts.reduce(0, +) <= Int(Int32.max) else {
                throw BackpropError(
                    .invalidArgument, "MPI: \(counts.reduce(0, +)) values exceed one collective's \(Int32.max)")
            }
            var displacements: [Int32] = [], total: Int32 = 0
            for count in counts {
                displacements.append(total)
                total += Int32(count)
            }
            return (counts.map { Int32($0) }, displacements)
        }

        public func abort(_ code: Int32) -> Never {
            bp_mpi_abort(code)
            exit(code)
        }

        public func finish() { _ = bp_mpi_finish() }
    }
#endif
