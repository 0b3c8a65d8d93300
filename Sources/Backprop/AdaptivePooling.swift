import CKernels

/// Pooling to a fixed output size, as PyTorch's adaptive pooling: output row oh covers input rows
/// [⌊oh · H / OH⌋, ⌈(oh + 1) · H / OH⌉) (columns alike), so windows may overlap and differ in size.
/// x [N, C, H, W] → u [N, C, OH, OW].
public class AdaptivePool2D: Module {
    public let outputSize: Size2D
    public var isTraining = true
    private let name: String
    private let pool: (Tensor, bp_pool2d_params, Module) throws -> (output: Tensor, backward: Backward)

    init(
        _ name: String, outputSize: Size2D,
        pool: @escaping (Tensor, bp_pool2d_params, Module) throws -> (output: Tensor, backward: Backward)
    ) throws {
        (self.name, self.outputSize, self.pool) = (name, outputSize, pool)
        try checkOutputSize(outputSize, name)
    }

    public var description: String { "\(name)(\(outputSize))" }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        try pool(input, adaptiveParameters(for: input.shape, size: outputSize, in: self), self)
    }
}

/// Adaptive max pooling, as PyTorch's `nn.AdaptiveMaxPool2d`; the gradient of a window goes to
/// its first maximum. Saves the argmax, as MaxPool2D.
public final class AdaptiveMaxPool2D: AdaptivePool2D {
    public init(outputSize: Size2D) throws {
        try super.init("AdaptiveMaxPool2D", outputSize: outputSize) { input, p, module in
            let (output, _, backward) = try maxPool(input, p, module: module)
            return (output, backward)
        }
    }
}

/// Adaptive average pooling, as PyTorch's `nn.AdaptiveAvgPool2d`: each window averaged over its own size.
public final class AdaptiveAvgPool2D: AdaptivePool2D {
    public init(outputSize: Size2D) throws {
        try super.init("AdaptiveAvgPool2D", outputSize: outputSize) { input, p, module in
            try averagePool(input, p, module: module)
        }
    }
}
