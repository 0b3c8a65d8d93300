import CKernels

/// Kernel, stride, padding and dilation of a fixed-window pooling layer, and the output size as
/// PyTorch computes it, per axis:
/// out = ⌊(in + 2 · pad − dilation · (kernel − 1) − 1 + (ceilMode ? stride − 1 : 0)) / stride⌋ + 1,
/// less one when ceil mode would start the last window inside the bottom or right padding.
struct PoolWindow: Sendable {
    let kernel: Size2D
    let stride: Size2D
    let padding: Size2D
    let dilation: Size2D
    let ceilMode: Bool

    /// Checks the settings as PyTorch does (padding at most half the kernel's span); `name`
    /// describes the module in errors.
    init(_ name: String, kernel: Size2D, stride: Size2D?, padding: Padding, dilation: Size2D, ceilMode: Bool) throws {
        try validateWindow(name, kernel: kernel, stride: stride ?? kernel, dilation: dilation)
        let pad = try padding.symmetric(name)
        let half = Size2D(
            (dilation.height * (kernel.height - 1) + 1) / 2, (dilation.width * (kernel.width - 1) + 1) / 2)
        guard pad.height <= half.height, pad.width <= half.width else {
            throw BackpropError(
                .invalidArgument, "\(name): padding must be between 0 and half the kernel size (\(half))")
        }
        (self.kernel, self.stride, self.padding, self.dilation, self.ceilMode) = (
            kernel, stride ?? kernel, pad, dilation, ceilMode
        )
    }

    static func outputSize(_ input: Int, kernel: Int, stride: Int, padding: Int, dilation: Int, ceilMode: Bool) -> Int {
        let numerator = input + 2 * padding - dilation * (kernel - 1) - 1 + (ceilMode ? stride - 1 : 0)
        var size = (numerator >= 0 ? numerator / stride : -((-numerator + stride - 1) / stride)) + 1
        if ceilMode, (size - 1) * stride >= input + padding { size -= 1 }
        return size
    }

    /// The kernels' parameters for an input of `shape`, or a thrown error naming what does not fit.
    func parameters(
        for shape: [Int], in module: Module, countIncludePad: Bool = true, divisorOverride: Int = 0
    ) throws
        -> bp_pool2d_params
    {
        try checkImageInput(shape, module)
        let outH = Self.outputSize(
            shape[2], kernel: kernel.height, stride: stride.height, padding: padding.height,
            dilation: dilation.height, ceilMode: ceilMode)
        let outW = Self.outputSize(
            shape[3], kernel: kernel.width, stride: stride.width, padding: padding.width,
            dilation: dilation.width, ceilMode: ceilMode)
        guard outH > 0, outW > 0 else {
            throw BackpropError(
                .shapeMismatch, "\(module): input \(describe(shape)) gives an output of size \(outH)x\(outW)")
        }
        return bp_pool2d_params(
            n: Int64(shape[0]), c: Int64(shape[1]), h: Int64(shape[2]), w: Int64(shape[3]),
            out_h: Int64(outH), out_w: Int64(outW), kernel_h: Int64(kernel.height),
            kernel_w: Int64(kernel.width), stride_h: Int64(stride.height), stride_w: Int64(stride.width),
            pad_h: Int64(padding.height), pad_w: Int64(padding.width),
            dilation_h: Int64(dilation.height), dilation_w: Int64(dilation.width), adaptive: 0,
            count_include_pad: countIncludePad ? 1 : 0, divisor_override: Int64(divisorOverride))
    }

    var description: String {
        "kernel: \(kernel), stride: \(stride), padding: \(padding)" + (dilation != 1 ? ", dilation: \(dilation)" : "")
            + (ceilMode ? ", ceilMode" : "")
    }
}

/// Checks an NCHW input: rank 4, every size positive and, when given, `channels` channels.
func checkImageInput(_ shape: [Int], channels: Int? = nil, _ module: Module) throws {
    guard shape.count == 4, shape.allSatisfy({ $0 > 0 }), channels == nil || shape[1] == channels else {
        throw BackpropError(
            .shapeMismatch,
            "\(module): input has shape \(describe(shape)), expected [N, \(channels.map(String.init) ?? "C"), H, W] with every size > 0"
        )
    }
}

/// The parameters of an adaptive pooling layer with output `size` on an input of `shape`.
func adaptiveParameters(for shape: [Int], size: Size2D, in module: Module) throws -> bp_pool2d_params {
    try checkImageInput(shape, module)
    return bp_pool2d_params(
        n: Int64(shape[0]), c: Int64(shape[1]), h: Int64(shape[2]), w: Int64(shape[3]),
        out_h: Int64(size.height), out_w: Int64(size.width), kernel_h: 0, kernel_w: 0, stride_h: 1,
        stride_w: 1, pad_h: 0, pad_w: 0, dilation_h: 1, dilation_w: 1, adaptive: 1, count_include_pad: 0,
        divisor_override: 0)
}

func checkOutputSize(_ size: Size2D, _ name: String) throws {
    guard size.isPositive else {
        throw BackpropError(.invalidArgument, "\(name): output size must be positive, got \(size)")
    }
}
