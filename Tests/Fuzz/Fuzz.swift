import Backprop
import BackpropFixtures
import BackpropTestSupport
import BackpropTraining
import Foundation

/// Fuzzing the file and spec parsers: every input must end in a value or a thrown error, never a
/// trap, a hang or a bad memory access. FUZZ_TARGET picks the parser (npy, safetensors, idx, spec, manifest, workloads).
/// Built with `-sanitize=fuzzer,address -D FUZZING` (Tests/Fuzz/run.sh), libFuzzer drives it;
/// built plainly, it runs the files named on its command line through the parser once each.
enum Fuzz {
    static let target = ProcessInfo.processInfo.environment["FUZZ_TARGET"] ?? "npy"

    static func run(_ bytes: [UInt8]) {
        switch target {
        case "npy": _ = try? NPY.parse(Data(bytes), name: "fuzz")
        case "safetensors": _ = try? SafeTensors.decode(Data(bytes), name: "fuzz")
        case "idx": _ = try? IDX.decode(bytes, name: "fuzz")
        case "spec": _ = try? ModelSpec.parse(String(decoding: bytes, as: UTF8.self))
        case "manifest": _ = try? FixtureSuite.cases(in: Data(bytes), source: "fuzz")
        case "workloads": _ = try? Workload.decode(Data(bytes), path: "fuzz")
        default: fatalError("FUZZ_TARGET must be npy, safetensors, idx, spec, manifest or workloads, not \(target)")
        }
    }
}

#if FUZZING
    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
        Fuzz.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
        return 0
    }

    @_silgen_name("LLVMFuzzerRunDriver")
    func runDriver(
        _ argc: UnsafeMutablePointer<CInt>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    /// SwiftPM links an executable's entry point under this name.
    @_cdecl("backprop_fuzz_main")
    public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
        var (count, vector) = (argc, argv)
        return runDriver(&count, &vector, fuzzOne)
    }
#else
    @main struct Replay {
        static func main() throws {
            for path in CommandLine.arguments.dropFirst() {
                Fuzz.run([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))))
            }
        }
    }
#endif
