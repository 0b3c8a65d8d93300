import ArgumentParser
import Backprop
import BackpropTestSupport
import CKernels
import Foundation

/// Times every workload of a workloads file, forward and backward, after checking each on a small
/// copy of its shape; prints a table and optionally writes the JSON that shared/bench/compare.py reads.
@main
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backprop-bench",
        abstract: "Time Backprop on the benchmark workloads (forward and backward, median ms)."
    )

    @Option(help: "The workloads file.") var workloads = "../shared/bench/workloads.json"
    @Option(help: "Threads for the kernels (default: OMP_NUM_THREADS, or every core).") var threads: Int?
    @Option(help: "Only these workloads, comma-separated.") var only: String?
    @Option(name: .customLong("min-time"), help: "Seconds of repetitions per phase (at least 5 runs).") var minTime =
        0.5
    @Option(help: "Write results as {engine, threads, results: {name: {forward_ms, backward_ms}}}.") var json: String?
    @Option(
        name: .customLong("peak-gflops"),
        help: "FMA peak of one core, for the share-of-peak column (default: measured on this machine).")
    var peakGFLOPs: Double?
    @Option(help: "Precision of the linear and convolution layers' products: fp32 or bf16 (checks run in fp32).")
    var precision: Precision = .fp32

    static func main() {
        ProcessSetup.configure()
        main(nil)
    }

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        guard minTime >= 0 else { throw ValidationError("--min-time must be >= 0") }
    }

    func run() throws {
        if let threads { Threads.count = threads }
        let selected = Set((only ?? "").split(separator: ",").map { String($0) })
        var all = try Workload.load(workloads)
        if !selected.isEmpty {
            let unknown = selected.subtracting(all.map(\.name))
            guard unknown.isEmpty else {
                throw ValidationError("unknown workloads: \(unknown.sorted().joined(separator: ", "))")
            }
            all = all.filter { selected.contains($0.name) }
        }
        let machine = Machine.measure()
        let threadCount = Threads.count, peak = (peakGFLOPs ?? machine.fmaGFLOPs) * Double(threadCount)
        print("Machine: \(machine.description)")
        print(
            "Backprop on \(threadCount) thread(s); product kernel \(bp_product_vector_width())-float vectors; "
                + "peak \(String(format: "%.1f", peak)) GFLOP/s"
        )
        print(Table.header)
        var results: [String: [String: Double]] = [:], failed: [String] = []
        for workload in all {
            // A workload the library cannot build is skipped; one whose check or run fails is
            // reported as failed; either way the run goes on to the next.
            do {
                let prepared = try Precision.$current.withValue(precision) { try Preparation.prepare(workload) }
                let (forward, backward) = try Precision.$current.withValue(precision) {
                    (
                        try Timing.medianMilliseconds(minTime: minTime, prepared.forward),
                        try Timing.medianMilliseconds(minTime: minTime, prepared.backward)
                    )
                }
                results[workload.name] =
                    ["forward_ms": forward, "backward_ms": backward]
                    .merging(prepared.peakStepBytes.map { ["peak_step_bytes": Double($0)] } ?? [:]) { a, _ in a }
                print(Table.row(workload.name, forward, backward, prepared, peak: peak))
                if let warning = prepared.warning { print(Table.note("", "  note: \(warning)")) }
            } catch let error as BackpropError where error.kind == .unsupported {
                print(Table.note(workload.name, "skipped: \(error.message)"))
            } catch {
                print(Table.note(workload.name, "FAILED: \(error)"))
                failed.append(workload.name)
            }
        }
        if let json {
            let object: [String: Any] = [
                "engine": "backprop", "threads": threadCount,
                "results": results, "machine": machine.description,
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: json))
            print("wrote \(json)")
        }
        if !failed.isEmpty {
            throw ValidationError("\(failed.count) workload(s) failed: \(failed.joined(separator: ", "))")
        }
    }
}

enum Timing {
    /// Three warm-up runs, then runs until `minTime` seconds have passed (at least 5, at most 200);
    /// the median in milliseconds.
    static func medianMilliseconds(minTime: Double, _ body: () throws -> Void) throws -> Double {
        for _ in 0..<3 { try body() }
        var times: [Double] = []
        let clock = ContinuousClock(), start = clock.now
        while times.count < 5 || (clock.now - start < .seconds(minTime) && times.count < 200) {
            let t0 = clock.now
            try body()
            let elapsed = clock.now - t0
            times.append(Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) * 1e-15)
        }
        times.sort()
        return times.count % 2 == 1 ? times[times.count / 2] : (times[times.count / 2 - 1] + times[times.count / 2]) / 2
    }
}

enum Table {
    static let header =
        pad("workload", 18) + pad("fwd ms", 10, left: true) + pad("bwd ms", 10, left: true)
        + "   fwd GFLOP/s (peak)   bwd GFLOP/s (peak)   GB/s fwd / bwd"

    static func row(_ name: String, _ forward: Double, _ backward: Double, _ prepared: Prepared, peak: Double) -> String
    {
        var line = pad(name, 18) + pad(fixed(forward, 3), 10, left: true) + pad(fixed(backward, 3), 10, left: true)
        if let flops = prepared.flops {
            let (f, b) = (flops.forward / forward / 1e6, flops.backward / backward / 1e6)
            line +=
                "   " + pad("\(fixed(f, 1)) (\(fixed(100 * f / peak, 0))%)", 21)
                + pad("\(fixed(b, 1)) (\(fixed(100 * b / peak, 0))%)", 21)
        } else {
            line += "   " + pad("-", 21) + pad("-", 21)
        }
        if let bytes = prepared.bytes {
            line += "\(fixed(bytes.forward / forward / 1e6, 1)) / \(fixed(bytes.backward / backward / 1e6, 1))"
        }
        if let peak = prepared.peakStepBytes { line += "peak step memory \(fixed(Double(peak) / 1e6, 1)) MB" }
        return line
    }

    static func note(_ name: String, _ text: String) -> String { pad(name, 18) + text }

    static func fixed(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }

    static func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - text.count))
        return left ? fill + text : text + fill
    }
}

extension Precision: ExpressibleByArgument {}
