import CKernels

/// A bfloat16 value: the top 16 bits of a float32 (sign, 8 exponent bits, 7 fraction bits), so it
/// has float32's range with 8 bits of precision. A storage type: arithmetic happens in float32
/// (`Float(x)` is exact), as in the bfloat16 products, which round float32 operands themselves.
public struct BFloat16: Sendable, Hashable, CustomStringConvertible {
    public var bitPattern: UInt16

    public init(bitPattern: UInt16) { self.bitPattern = bitPattern }

    /// `value` rounded to the nearest bfloat16, ties to even, as PyTorch's `.to(torch.bfloat16)`:
    /// infinities stay infinities, every NaN becomes the NaN 0xffff.
    public init(_ value: Float) {
        var bits: UInt16 = 0
        withUnsafePointer(to: value) { bp_bf16_from_float(&bits, $0, 1) }
        bitPattern = bits
    }

    public var description: String { "\(Float(self))" }

    /// `values` rounded as `init(_:)` rounds each, by the vectorised conversion.
    public static func array(_ values: [Float]) -> [BFloat16] {
        uninitializedArray(values.count) { (out: UnsafeMutablePointer<BFloat16>) in
            out.withMemoryRebound(to: UInt16.self, capacity: values.count) {
                bp_bf16_from_float($0, values, Int64(values.count))
            }
        }
    }

    /// `values` as float32 (exact).
    public static func floats(_ values: [BFloat16]) -> [Float] {
        values.withUnsafeBufferPointer { buffer in
            uninitializedArray(values.count) { out in
                buffer.withMemoryRebound(to: UInt16.self) { bp_bf16_to_float(out, $0.baseAddress, Int64(values.count)) }
            }
        }
    }
}

extension Float {
    /// The float32 whose top half is `value` (exact).
    public init(_ value: BFloat16) { self.init(bitPattern: UInt32(value.bitPattern) << 16) }
}
