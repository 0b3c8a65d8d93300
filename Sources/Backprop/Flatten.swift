/// Flattens every axis after the first: [N, d1, d2, …] → [N, d1·d2·…], as PyTorch's `nn.Flatten()`.
/// Its backward reshapes the gradient back.
public final class Flatten: Module {
    public var isTraining = true

    public init() {}

    public var description: String { "Flatten()" }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        guard input.rank >= 1 else {
            throw BackpropError(.shapeMismatch, "\(self): input has shape \(describe(input.shape)), expected [N, ...]")
        }
        let output = Tensor(unchecked: [input.shape[0], input.shape.dropFirst().reduce(1, *)], scalars: input.scalars)
        return (
            output,
            { [inputShape = input.shape, outputShape = output.shape] gradOutput in
                try checkGradient(gradOutput, matches: outputShape, in: self)
                return Tensor(unchecked: inputShape, scalars: gradOutput.scalars)
            }
        )
    }
}
