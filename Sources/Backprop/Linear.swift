import CKernels

/// A fully connected layer: u = z Wᵀ + b for z of shape [*, in], W of shape [out, in]
/// (PyTorch's layout) and b of shape [out]; u has shape [*, out].
///
/// Backward: ∂J/∂z = v W; ∂J/∂W += vᵀ z; ∂J/∂b += Σ_rows v (rows = all leading axes).
/// The three products run in `Precision.current` as the forward found it.
public final class Linear: Module {
    public let inFeatures: Int
    public let outFeatures: Int
    public let weight: Parameter
    public let bias: Parameter?
    public var isTraining = true

    public init(
        _ inFeatures: Int, _ outFeatures: Int, bias: Bool = true,
        initialization: WeightInitialization = .pytorchDefault, seed: UInt64 = 0
    ) throws {
        guard inFeatures > 0, outFeatures > 0 else {
            throw BackpropError(
                .invalidArgument,
                "Linear(in: \(inFeatures), out: \(outFeatures)): sizes must be positive")
        }
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        var generator = SplitMix64(seed: seed)
        weight = Parameter(
            try initialization.weight(
                shape: [outFeatures, inFeatures], fanIn: inFeatures,
                fanOut: outFeatures, using: &generator))
        self.bias =
            bias
            ? Parameter(
                try WeightInitialization.bias(
                    count: outFeatures, fanIn: inFeatures,
                    using: &generator)) : nil
    }

    public var description: String { "Linear(in: \(inFeatures), out: \(outFeatures))" }

    public var ownParameters: [(name: String, parameter: Parameter)] {
        weightAndBias(weight, bias)
    }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        try pass(input).full
    }

    public func forwardWithoutInputGradient(_ input: Tensor) throws -> (output: Tensor, backward: ParameterBackward) {
        try pass(input).parametersOnly
    }

    private func pass(_ input: Tensor) throws -> SplitPass {
        guard input.rank >= 1, input.shape.last == inFeatures else {
            throw BackpropError(
                .shapeMismatch,
                "\(self): input has shape \(describe(input.shape)), expected [*, \(inFeatures)]")
        }
        let rows = Int64(input.count / inFeatures), n = Int64(inFeatures), m = Int64(outFeatures)
        let outputShape = Array(input.shape.dropLast() + [outFeatures]), precision = Precision.kernelCode
        let output = try input.withPointer { x in
            try weight.value.withPointer { w in
                try withOptionalPointer(bias?.value) { b in
                    try Tensor.computed(outputShape, by: self) { bp_linear_forward($0, x, w, b, rows, n, m, precision) }
                }
            }
        }
        let saved = SavedTensor(input), inputShape = input.shape  // read again only by the weight gradient's product
        return SplitPass(
            output: output,
            parameterBackward: { [weight, bias] gradOutput in
                try checkGradient(gradOutput, matches: outputShape, in: self)
                let missing = gradOutput.withPointer { dy in
                    saved.tensor.withPointer { x in
                        weight.grad.withMutablePointer { dw in
                            withOptionalMutablePointer(bias) { db in
                                bp_linear_backward_weights(dw, db, dy, x, rows, n, m, precision)
                            }
                        }
                    }
                }
                try checkAllocation(missing, self)
            },
            inputBackward: { [weight] gradOutput in
                try gradOutput.withPointer { dy in
                    try weight.value.withPointer { w in
                        try Tensor.computed(inputShape, by: self) {
                            bp_linear_backward_data($0, dy, w, rows, n, m, precision)
                        }
                    }
                }
            })
    }
}

/// Calls `body` with the tensor's scalars, or with nil when there is no tensor.
func withOptionalPointer<R>(_ tensor: Tensor?, _ body: (UnsafePointer<Float>?) throws -> R) rethrows -> R {
    guard let tensor else { return try body(nil) }
    return try tensor.withPointer { try body($0) }
}

/// Calls `body` with the parameter's gradient, or with nil when there is no parameter.
func withOptionalMutablePointer<R>(
    _ parameter: Parameter?,
    _ body: (UnsafeMutablePointer<Float>?) throws -> R
) rethrows -> R {
    guard let parameter else { return try body(nil) }
    return try parameter.grad.withMutablePointer { try body($0) }
}
