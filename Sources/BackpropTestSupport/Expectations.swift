import Backprop
import CKernels
import Foundation
import Testing

/// Runs `body` with the kernels' thread count set to `threads`, then restores it.
public func withThreads<R>(_ threads: Int, _ body: () throws -> R) rethrows -> R {
    let saved = Threads.count
    Threads.count = threads
    defer { Threads.count = saved }
    return try body()
}

/// The float32 product kernel's vector width (16: AVX-512, 8: AVX2) while `body` runs: the widest
/// this CPU has, or 8 with `forcingAVX2`. Calls are serialised with each other (the switch is
/// process-wide; both kernels give the same bits, so other code running meanwhile is unaffected).
public func withProductKernel<R>(forcingAVX2 force: Bool, _ body: (_ width: Int) throws -> R) rethrows -> R {
    productKernelLock.lock()
    defer { productKernelLock.unlock() }
    let wasForced = bp_product_vector_width() == 8 && bp_cpu_vector_level() >= 2
    bp_product_force_avx2(force ? 1 : 0)
    defer { bp_product_force_avx2(wasForced ? 1 : 0) }
    return try body(Int(bp_product_vector_width()))
}

private let productKernelLock = NSLock()

/// Runs `body` with the kernels choosing between their equivalent ways as they do on AMD's cores
/// with AVX-512 (`amd`) or on Intel's, whatever this CPU is (bp_cpu_vendor_override), then as this CPU's own
/// again. Calls are serialised with each other (the switch is process-wide; both ways give the same
/// bits, so other code running meanwhile is unaffected).
public func withCoreChoices<R>(amd: Bool, _ body: () throws -> R) rethrows -> R {
    coreChoicesLock.lock()
    defer { coreChoicesLock.unlock() }
    bp_cpu_vendor_override(amd ? 1 : 0)
    defer { bp_cpu_vendor_override(-1) }
    return try body()
}

private let coreChoicesLock = NSLock()

/// Runs `run` with 1 thread and with each of `others`, and expects the same bits in every output.
public func expectBitIdentical(
    threads others: [Int] = [2, 3], sourceLocation: SourceLocation = #_sourceLocation,
    _ run: () throws -> [[UInt32]]
) rethrows {
    let one = try withThreads(1, run)
    for threads in others {
        let other = try withThreads(threads, run)
        #expect(
            one.count == other.count, "\(one.count) outputs with 1 thread, \(other.count) with \(threads)",
            sourceLocation: sourceLocation)
        for (index, (a, b)) in zip(one, other).enumerated() {
            // The first differing element, not the arrays: a diff of large arrays takes minutes.
            let difference = a.count == b.count ? a.indices.first { a[$0] != b[$0] } : min(a.count, b.count)
            #expect(
                difference == nil, "output \(index) differs at \(difference ?? -1) with \(threads) threads",
                sourceLocation: sourceLocation)
        }
    }
}

/// Asserts that `body` throws a BackpropError of `kind` whose message contains every fragment.
public func expectError(
    _ kind: BackpropError.Kind, mentioning fragments: [String],
    sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected a \(kind) error mentioning \(fragments)", sourceLocation: sourceLocation)
    } catch let error as BackpropError {
        #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(
                error.message.contains(fragment), "'\(error.message)' should mention '\(fragment)'",
                sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected a BackpropError, got \(error)", sourceLocation: sourceLocation)
    }
}

/// Runs the gradient check and records its report when it fails.
public func expectGradientsCorrect(
    _ module: Module, input: Tensor, tolerance: Double = 1e-2,
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let report = try GradientCheck.run(module, input: input, tolerance: tolerance)
    #expect(report.passed, "\(report)", sourceLocation: sourceLocation)
}
