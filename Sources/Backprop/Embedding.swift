import CKernels

/// A lookup table, as PyTorch's `nn.Embedding`: indices of any shape → their rows of the weight,
/// [*, dimension]. The indices are whole numbers in [0, count) held in a float tensor (exact up
/// to 2^24); weight [count, dimension] starts normal(0, 1) with the padding row (if any) zero.
///
/// Backward: ∂J/∂weight[k] += Σ v over the positions holding k (repeated indices accumulate; the
/// padding row gets none). The indices are not differentiable: their gradient is zero.
/// Memory: the forward saves the indices.
public final class Embedding: Module {
    public let count: Int
    public let dimension: Int
    public let paddingIndex: Int?
    public let weight: Parameter
    public var isTraining = true

    /// `paddingIndex` may count from the end, as PyTorch's: −1 is the last row.
    public init(_ count: Int, _ dimension: Int, paddingIndex: Int? = nil, seed: UInt64 = 0) throws {
        guard count > 0, dimension > 0 else {
            throw BackpropError(.invalidArgument, "Embedding(\(count), \(dimension)): sizes must be positive")
        }
        if let paddingIndex, !(-count..<count).contains(paddingIndex) {
            throw BackpropError(
                .invalidArgument,
                "Embedding(\(count), \(dimension)): padding index \(paddingIndex) is outside [-\(count), \(count))")
        }
        (self.count, self.dimension) = (count, dimension)
        self.paddingIndex = paddingIndex.map { $0 < 0 ? $0 + count : $0 }
        var generator = SplitMix64(seed: seed)
        var values = try Tensor.normal(shape: [count, dimension], using: &generator)
        if let padding = self.paddingIndex {
            for j in 0..<dimension { values[padding * dimension + j] = 0 }
        }
        weight = Parameter(values)
    }

    public var description: String {
        "Embedding(\(count), \(dimension)\(paddingIndex.map { ", padding: \($0)" } ?? ""))"
    }

    public var ownParameters: [(name: String, parameter: Parameter)] { [("weight", weight)] }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        let (output, backward) = try pass(input)
        return (
            output,
            { gradOutput in
                try backward(gradOutput)
                return Tensor(unchecked: input.shape, scalars: [Float](repeating: 0, count: input.count))
            }
        )
    }

    public func forwardWithoutInputGradient(_ input: Tensor) throws -> (output: Tensor, backward: ParameterBackward) {
        try pass(input)
    }

    private func pass(_ input: Tensor) throws -> (output: Tensor, backward: ParameterBackward) {
        var bad: Int64 = -1
        let indices = [Int64](unsafeUninitializedCapacity: input.count) { buffer, initialized in
            if let base = buffer.baseAddress {  // nil for no indices
                bad = input.withPointer { bp_embedding_indices(base, $0, Int64(input.count), Int64(count)) }
            }
            initialized = input.count
        }
        if bad >= 0 {
            let (position, value) = (Int(bad), input.scalars[Int(bad)])
            throw BackpropError(
                .invalidArgument, "\(self): index \(value) at \(position) is not a whole number in [0, \(count))")
        }
        let (rows, dim) = (Int64(input.count), Int64(dimension)), outputShape = input.shape + [dimension]
        let output = weight.value.withPointer { w in
            Tensor.filled(outputShape) { bp_embedding_forward($0, indices, w, rows, dim) }
        }
        return (
            output,
            { [weight, count, paddingIndex] gradOutput in
                try checkGradient(gradOutput, matches: outputShape, in: self)
                let missing = gradOutput.withPointer { dy in
                    weight.grad.withMutablePointer {
                        bp_embedding_backward($0, dy, indices, rows, dim, Int64(count), Int64(paddingIndex ?? -1))
                    }
                }
                try checkAllocation(missing, self)
            }
        )
    }
}
