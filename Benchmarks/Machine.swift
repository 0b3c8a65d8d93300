import CKernels
import Foundation

/// The machine the benchmark runs on: the CPU as /proc/cpuinfo names it, the vectors it has, and
/// one core's fused multiply-add rate and memory bandwidth, measured.
struct Machine {
    let cpu: String
    let vectors: String
    let fmaGFLOPs: Double
    let triadGBs: Double

    /// Reads /proc/cpuinfo and measures (about a second).
    static func measure() -> Machine {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        func field(_ name: String) -> String {
            info.split(separator: "\n").first { $0.hasPrefix(name) }.map {
                String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces)
            } ?? "unknown"
        }
        let flags = Set(field("flags").split(separator: " ").map(String.init))
        let vectors =
            flags.contains("avx512f")
            ? "AVX-512" + (flags.contains("avx512_bf16") ? " with BF16" : "")
            : flags.contains("avx2") ? "AVX2" + (flags.contains("fma") ? " with FMA" : "") : "SSE"
        return Machine(
            cpu: "\(field("model name")) (\(field("vendor_id")))", vectors: vectors,
            fmaGFLOPs: bp_measure_fma_gflops(0.5), triadGBs: bp_measure_triad_gbs(16 << 20, 0.5))
    }

    var description: String {
        "\(cpu), \(vectors); one core measured: FMA \(String(format: "%.1f", fmaGFLOPs)) GFLOP/s, "
            + "triad \(String(format: "%.1f", triadGBs)) GB/s"
    }
}
