import Synchronization

/// The bytes of tensor storage alive, and the most alive at once: for the whole process, and for
/// the tensors created inside a `measure` block (a step's activations and gradients). Every
/// tensor's storage counts from its creation until the last tensor sharing it is gone; a tensor
/// that shares another's elements through an array copy (a reshape) counts them again.
public enum TensorMemory {
    /// Bytes of tensor storage alive in the process now.
    public static var liveBytes: Int { process.live.load(ordering: .relaxed) }

    /// The most bytes alive at once since the process started or the last `resetPeak()`.
    public static var peakBytes: Int { process.peak.load(ordering: .relaxed) }

    /// Starts the process's peak again from what is alive now.
    public static func resetPeak() { process.peak.store(process.live.load(ordering: .relaxed), ordering: .relaxed) }

    /// Runs `body` and measures the storage of the tensors it creates (on this task): the most
    /// alive at once while it ran, and what is still alive when it returns.
    public static func measure<R>(_ body: () throws -> R) rethrows -> (result: R, peakBytes: Int, liveBytes: Int) {
        let scope = MemoryCount()
        let result = try $scope.withValue(scope) { try body() }
        return (result, scope.peak.load(ordering: .relaxed), scope.live.load(ordering: .relaxed))
    }

    static let process = MemoryCount()
    @TaskLocal static var scope: MemoryCount?
}

/// A count of live bytes and its peak.
final class MemoryCount: Sendable {
    let live = Atomic<Int>(0)
    let peak = Atomic<Int>(0)

    func add(_ bytes: Int) {
        let now = live.add(bytes, ordering: .relaxed).newValue
        var seen = peak.load(ordering: .relaxed)
        while now > seen {
            let (exchanged, current) = peak.compareExchange(expected: seen, desired: now, ordering: .relaxed)
            if exchanged { break }
            seen = current
        }
    }

    func remove(_ bytes: Int) { live.subtract(bytes, ordering: .relaxed) }
}

/// Storage of `bytes`, counted while alive in the process and in the `measure` scope it was
/// created in.
class CountedStorage: @unchecked Sendable {
    private let bytes: Int
    private let scope: MemoryCount?

    init(bytes: Int) {
        self.bytes = bytes
        scope = TensorMemory.scope
        TensorMemory.process.add(bytes)
        scope?.add(bytes)
    }

    deinit {
        TensorMemory.process.remove(bytes)
        scope?.remove(bytes)
    }
}

/// A tensor's elements.
final class TensorStorage: CountedStorage, @unchecked Sendable {
    var scalars: [Float]

    init(_ scalars: [Float]) {
        self.scalars = scalars
        super.init(bytes: scalars.count * MemoryLayout<Float>.stride)
    }
}

extension Sequential {
    /// What each layer's backward keeps alive, in bytes of tensor storage: the layers run one by
    /// one on `input` (no two fused), each backward kept as training keeps it, and after each
    /// layer the bytes alive beyond its output and what the layers before it hold; a layer that
    /// keeps its input counts it. Counted in a scope of its own, so other work running at the same
    /// time does not disturb the figures.
    public func memoryHeldByBackward(_ input: Tensor) throws -> [(name: String, layer: String, bytes: Int)] {
        let scope = MemoryCount()
        return try TensorMemory.$scope.withValue(scope) {
            var x: Tensor? = Tensor(unchecked: input.shape, scalars: input.scalars)  // counted in the scope
            var backwards: [Backward] = [], held: [(name: String, layer: String, bytes: Int)] = []
            var holding = 0  // bytes the earlier layers' backwards keep
            for (index, layer) in layers.enumerated() {
                let (output, backward) = try layer.forward(x!)
                backwards.append(backward)
                x = nil  // what the layer's backward keeps of its input stays alive, the rest goes
                let bytes = scope.live.load(ordering: .relaxed) - output.count * MemoryLayout<Float>.stride - holding
                held.append(("\(index)", "\(layer)", bytes))
                holding += bytes
                x = output
            }
            withExtendedLifetime(backwards) {}
            return held
        }
    }
}
