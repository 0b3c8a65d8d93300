/// A tensor a forward keeps for its backward: as it is, or rounded to bfloat16 (half the bytes).
///
/// In a bfloat16 scope (`Precision.current == .bf16`) layers keep in bfloat16 what their backward
/// reads only through bfloat16 products (the inputs of linear layers and convolutions: the same
/// bits as keeping them whole), only by its sign (the inputs of ReLU and LeakyReLU: the same unless
/// 0 < |z| <= 2^-134, which rounds to 0), or may read rounded (batch normalization's input: its
/// backward normalises the rounded values). Everything else a forward keeps stays float32.
struct SavedTensor: Sendable {
    let shape: [Int]
    private let whole: Tensor?
    private let rounded: RoundedStorage?

    /// Keeps `tensor`, rounded to bfloat16 when `rounding` (by default, in a bfloat16 scope).
    init(_ tensor: Tensor, rounding: Bool = Precision.current == .bf16) {
        shape = tensor.shape
        guard rounding else {
            (whole, rounded) = (tensor, nil)
            return
        }
        whole = nil
        rounded = RoundedStorage(BFloat16.array(tensor.scalars))
    }

    /// The tensor kept; when rounded, a new float32 tensor of the bfloat16 values.
    var tensor: Tensor {
        guard let rounded else { return whole! }
        return Tensor(unchecked: shape, scalars: BFloat16.floats(rounded.values))
    }
}

extension SavedTensor {
    /// A tensor of the kept one's shape that `kernel(output, kept)` writes, for kernels that may write
    /// over what they read (each element of the kept tensor read before that element of the output
    /// is written, and no `restrict`): a new tensor beside the kept one, or, when the kept one is
    /// rounded, its float32 expansion overwritten in place (no third tensor of this size). Returns it
    /// with what the kernel returned.
    func overwritingExpansion(_ kernel: (UnsafeMutablePointer<Float>, UnsafePointer<Float>) -> Int64) -> (Tensor, Int64)
    {
        var result: Int64 = 0
        guard rounded != nil else {
            let output = whole!.withPointer { kept in Tensor.filled(shape) { result = kernel($0, kept) } }
            return (output, result)
        }
        var output = tensor
        output.withMutablePointer { result = kernel($0, UnsafePointer($0)) }
        return (output, result)
    }
}

/// bfloat16 values, counted as tensor storage is.
final class RoundedStorage: CountedStorage, @unchecked Sendable {
    let values: [BFloat16]

    init(_ values: [BFloat16]) {
        self.values = values
        super.init(bytes: values.count * MemoryLayout<BFloat16>.stride)
    }
}
