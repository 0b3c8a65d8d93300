import CKernels

/// Average pooling over the windows `p` describes; the backward spreads each gradient evenly over
/// its window with the same divisor. Saves nothing but the input's shape.
func averagePool(
    _ input: Tensor, _ parameters: bp_pool2d_params, module: Module
) throws -> (
    output: Tensor, backward: Backward
) {
    var p = parameters
    let outputShape = [input.shape[0], input.shape[1], Int(p.out_h), Int(p.out_w)], inputShape = input.shape
    let output = try input.withPointer { x in
        try Tensor.computed(outputShape, by: module) { bp_avgpool2d_forward($0, x, &p) }
    }
    return (
        output,
        { gradOutput in
            try checkGradient(gradOutput, matches: outputShape, in: module)
            var p = parameters
            return try gradOutput.withPointer { dy in
                try Tensor.computed(inputShape, by: module) { bp_avgpool2d_backward($0, dy, &p) }
            }
        }
    )
}

/// Average pooling, as PyTorch's `nn.AvgPool2d`: kernel, stride (default: the kernel), padding
/// (zeros, at most half the kernel), ceil mode, whether the padding counts in the divisor, and
/// a divisor override.
public final class AvgPool2D: Module {
    let window: PoolWindow
    public let countIncludePad: Bool
    public let divisorOverride: Int?
    public var isTraining = true

    public init(
        kernelSize: Size2D, stride: Size2D? = nil, padding: Padding = 0, ceilMode: Bool = false,
        countIncludePad: Bool = true, divisorOverride: Int? = nil
    ) throws {
        let name = "AvgPool2D(kernel: \(kernelSize))"
        window = try PoolWindow(
            name, kernel: kernelSize, stride: stride, padding: padding, dilation: 1, ceilMode: ceilMode)
        self.countIncludePad = countIncludePad
        self.divisorOverride = divisorOverride
        if let divisorOverride, divisorOverride <= 0 {
            throw BackpropError(.invalidArgument, "\(description): divisor override must be positive")
        }
    }

    public var description: String {
        "AvgPool2D(\(window.description)\(countIncludePad ? "" : ", excluding padding")"
            + "\(divisorOverride.map { ", divisor: \($0)" } ?? ""))"
    }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        try averagePool(
            input,
            window.parameters(
                for: input.shape, in: self, countIncludePad: countIncludePad,
                divisorOverride: divisorOverride ?? 0), module: self)
    }
}

/// The mean of each plane: x [N, C, H, W] → u [N, C, 1, 1], as `nn.AdaptiveAvgPool2d(1)`.
public final class GlobalAvgPool2D: Module {
    public var isTraining = true

    public init() {}

    public var description: String { "GlobalAvgPool2D()" }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        try averagePool(input, adaptiveParameters(for: input.shape, size: 1, in: self), module: self)
    }
}
