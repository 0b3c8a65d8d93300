import CKernels
import Foundation

/// The arithmetic of the matrix products of linear, convolution and recurrent layers: float32, or
/// bfloat16 inputs with float32 sums (`bp_bf16_gemm`: AVX512_BF16's dot-product instruction where
/// the CPU has it, an exact emulation elsewhere, the same bits). Everything else (biases, the
/// recurrent cells, activations, normalization statistics, losses, optimizer state, the master
/// weights) stays float32. In a bfloat16 scope the layers also keep some of what their backward
/// reads in bfloat16 (see `SavedTensor`). bfloat16 has float32's exponent range, so no loss scaling
/// is needed.
///
/// A scope, read when a layer runs its forward (its backward keeps that forward's precision):
///
///     try Precision.$current.withValue(.bf16) { try Training.epoch(...) }
public enum Precision: String, Sendable, CaseIterable, LosslessStringConvertible {
    case fp32, bf16

    public init?(_ description: String) { self.init(rawValue: description) }

    /// The precision of the products the current task runs; float32 unless a scope sets it.
    @TaskLocal public static var current: Precision = .fp32

    /// Runs bfloat16 products by the emulation even where the CPU has the instruction (to compare the
    /// two on one machine, or time the emulation); BACKPROP_BF16_EMULATE=1 sets it for a process.
    @TaskLocal public static var emulatesInstruction =
        ProcessInfo.processInfo.environment["BACKPROP_BF16_EMULATE"] == "1"

    public var description: String { rawValue }

    /// Whether this CPU has the bfloat16 dot-product instruction (AVX512_BF16); without it bfloat16
    /// products are emulated, several times slower than float32's.
    public static var hasInstruction: Bool { bp_bf16_has_instruction() != 0 }

    /// The kernels' code for the current precision (BP_FP32, BP_BF16 or BP_BF16_EMULATED).
    static var kernelCode: Int32 {
        switch current {
        case .fp32: Int32(BP_FP32)
        case .bf16: Int32(emulatesInstruction ? BP_BF16_EMULATED : BP_BF16)
        }
    }
}
