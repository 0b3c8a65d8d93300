import CKernels

/// Kernel, stride, padding and dilation of a fixed-window pooling layer, per axis (height, width),
/// and the output size as PyTorch computes it:
/// out = ⌊(in + 2 · pad − dilation · (kernel − 1) − 1 + (ceilMode ? stride − 1 : 0)) / stride⌋ + 1,
/// less one when ceil mode would start the last window inside the bottom or right padding.
struct PoolWindow: Sendable {
    let kernel: (Int, Int)
    let stride: (Int, Int)
    let padding: (Int, Int)
    let dilation: (Int, Int)
    let ceilMode: Bool

    /// Checks the settings as PyTorch does; `name` describes the module in errors.
    func validate(_ name: String) throws {
        guard kernel.0 > 0, kernel.1 > 0 else { throw BackpropError(.invalidArgument, "\(name): kernel size must be positive") }
        guard stride.0 > 0, stride.1 > 0 else { throw BackpropError(.invalidArgument, "\(name): stride must be positive") }
        guard dilation.0 > 0, dilation.1 > 0 else { throw BackpropError(.invalidArgument, "\(name): dilation must be positive") }
        let halfH = (dilation.0 * (kernel.0 - 1) + 1) / 2, halfW = (dilation.1 * (kernel.1 - 1) + 1) / 2
        guard padding.0 >= 0, padding.1 >= 0, padding.0 <= halfH, padding.1 <= halfW else {
            throw BackpropError(.invalidArgument, "\(name): padding must be between 0 and half the kernel size (\(halfH)x\(halfW))")
        }
    }

    static func outputSize(_ input: Int, kernel: Int, stride: Int, padding: Int, dilation: Int, ceilMode: Bool) -> Int {
        let numerator = input + 2 * padding - dilation * (kernel - 1) - 1 + (ceilMode ? stride - 1 : 0)
        var size = (numerator >= 0 ? numerator / stride : -((-numerator + stride - 1) / stride)) + 1
        if ceilMode, (size - 1) * stride >= input + padding { size -= 1 }
        return size
    }

    func parameters(for shape: [Int], in module: Module, countIncludePad: Bool = true, divisorOverride: Int = 0) throws -> bp_pool2d_params {
        try checkImageInput(shape, module)
        let outH = Self.outputSize(shape[2], kernel: kernel.0, stride: stride.0, padding: padding.0, dilation: dilation.0, ceilMode: ceilMode)
        let outW = Self.outputSize(shape[3], kernel: kernel.1, stride: stride.1, padding: padding.1, dilation: dilation.1, ceilMode: ceilMode)
        guard outH > 0, outW > 0 else {
            throw BackpropError(.shapeMismatch, "\(module): input \(describe(shape)) gives an output of size \(outH)x\(outW)")
        }
        return bp_pool2d_params(n: Int64(shape[0]), c: Int64(shape[1]), h: Int64(shape[2]), w: Int64(shape[3]),
                                out_h: Int64(outH), out_w: Int64(outW), kernel_h: Int64(kernel.0), kernel_w: Int64(kernel.1),
                                stride_h: Int64(stride.0), stride_w: Int64(stride.1), pad_h: Int64(padding.0),
                                pad_w: Int64(padding.1), dilation_h: Int64(dilation.0), dilation_w: Int64(dilation.1),
                                adaptive: 0, count_include_pad: countIncludePad ? 1 : 0, divisor_override: Int64(divisorOverride))
    }

    var description: String {
        "kernel: \(kernel.0)x\(kernel.1), stride: \(stride.0)x\(stride.1), padding: \(padding.0)x\(padding.1)"
            + (dilation != (1, 1) ? ", dilation: \(dilation.0)x\(dilation.1)" : "") + (ceilMode ? ", ceilMode" : "")
    }
}

/// Checks an NCHW input: rank 4, every size positive and, when given, `channels` channels.
func checkImageInput(_ shape: [Int], channels: Int? = nil, _ module: Module) throws {
    guard shape.count == 4, shape.allSatisfy({ $0 > 0 }), channels == nil || shape[1] == channels else {
        throw BackpropError(.shapeMismatch,
                            "\(module): input has shape \(describe(shape)), expected [N, \(channels.map(String.init) ?? "C"), H, W] with every size > 0")
    }
}

/// The parameters of an adaptive pooling layer with output `size` on an input of `shape`.
func adaptiveParameters(for shape: [Int], size: (Int, Int), in module: Module) throws -> bp_pool2d_params {
    try checkImageInput(shape, module)
    return bp_pool2d_params(n: Int64(shape[0]), c: Int64(shape[1]), h: Int64(shape[2]), w: Int64(shape[3]),
                            out_h: Int64(size.0), out_w: Int64(size.1), kernel_h: 0, kernel_w: 0, stride_h: 1, stride_w: 1,
                            pad_h: 0, pad_w: 0, dilation_h: 1, dilation_w: 1, adaptive: 1, count_include_pad: 0,
                            divisor_override: 0)
}

func checkOutputSize(_ size: (Int, Int), _ name: String) throws {
    guard size.0 > 0, size.1 > 0 else {
        throw BackpropError(.invalidArgument, "\(name): output size must be positive, got \(size.0)x\(size.1)")
    }
}

// MARK: - Max pooling

/// The argmax of every window, one byte each when windows have at most 256 taps.
enum Argmax {
    case bytes([UInt8])
    case words([Int32])
}

/// Max pooling over the windows `p` describes: u = max over each window (NaN wins; ties go to
/// the first maximum in row-major window order); the backward routes each gradient to its
/// window's argmax. Saves the argmax: one byte per output (4 for windows over 256 taps).
func maxPool(_ input: Tensor, _ parameters: bp_pool2d_params, module: Module)
    -> (output: Tensor, argmax: Argmax, backward: Backward) {
    var p = parameters
    let outputShape = [input.shape[0], input.shape[1], Int(p.out_h), Int(p.out_w)]
    let count = outputShape.reduce(1, *)
    // The kernel writes every output and every argmax: both start uninitialised (zeroing the
    // argmax first cost a single-threaded pass over it).
    var argmax: Argmax = .bytes([])
    let output = input.withPointer { x in
        Tensor.filled(outputShape) { y in
            if bp_pool2d_window_size(&p) <= 256 {
                argmax = .bytes(uninitializedArray(count) { bp_maxpool2d_forward(y, $0, nil, x, &p) })
            } else {
                argmax = .words(uninitializedArray(count) { bp_maxpool2d_forward(y, nil, $0, x, &p) })
            }
        }
    }
    let saved = argmax
    return (output, argmax, { gradOutput in
        try checkGradient(gradOutput, matches: outputShape, in: module)
        return gradOutput.withPointer { dy in
            Tensor.filled(input.shape) { dx in
                switch saved {
                case .bytes(let indices): bp_maxpool2d_backward(dx, dy, indices, nil, &p)
                case .words(let indices): bp_maxpool2d_backward(dx, dy, nil, indices, &p)
                }
            }
        }
    })
}

/// Max pooling, as PyTorch's `nn.MaxPool2d`: kernel, stride (default: the kernel), padding (implicit
/// −∞, at most half the kernel), dilation and ceil mode. x [N, C, H, W] → u [N, C, OH, OW].
/// Memory: the forward saves one byte per output (the argmax within its window).
public final class MaxPool2D: Module {
    let window: PoolWindow
    public var isTraining = true

    public init(kernelSize: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0),
                dilation: (Int, Int) = (1, 1), ceilMode: Bool = false) throws {
        window = PoolWindow(kernel: kernelSize, stride: stride ?? kernelSize, padding: padding, dilation: dilation,
                            ceilMode: ceilMode)
        try window.validate(description)
    }

    public convenience init(kernelSize: Int, stride: Int? = nil, padding: Int = 0, dilation: Int = 1,
                            ceilMode: Bool = false) throws {
        try self.init(kernelSize: (kernelSize, kernelSize), stride: stride.map { ($0, $0) }, padding: (padding, padding),
                      dilation: (dilation, dilation), ceilMode: ceilMode)
    }

    public var description: String { "MaxPool2D(\(window.description))" }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        let (output, _, backward) = maxPool(input, try window.parameters(for: input.shape, in: self), module: self)
        return (output, backward)
    }

    /// The forward with PyTorch's `return_indices`: each output's argmax as ih · W + iw in its plane.
    public func forwardWithIndices(_ input: Tensor) throws -> (output: Tensor, indices: [Int], backward: Backward) {
        var p = try window.parameters(for: input.shape, in: self)
        let (output, argmax, backward) = maxPool(input, p, module: self)
        var indices = [Int64](repeating: 0, count: output.count)
        switch argmax {
        case .bytes(let taps): bp_maxpool2d_plane_indices(&indices, taps, nil, &p)
        case .words(let taps): bp_maxpool2d_plane_indices(&indices, nil, taps, &p)
        }
        return (output, indices.map(Int.init), backward)
    }
}

/// Adaptive max pooling to a fixed output size, as PyTorch's `nn.AdaptiveMaxPool2d`: output row oh
/// covers input rows [⌊oh · H / OH⌋, ⌈(oh + 1) · H / OH⌉) (columns alike); windows may overlap.
public final class AdaptiveMaxPool2D: Module {
    public let outputSize: (height: Int, width: Int)
    public var isTraining = true

    public init(outputSize: (Int, Int)) throws {
        self.outputSize = outputSize
        try checkOutputSize(outputSize, "AdaptiveMaxPool2D")
    }

    public var description: String { "AdaptiveMaxPool2D(\(outputSize.height)x\(outputSize.width))" }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        let (output, _, backward) = maxPool(input, try adaptiveParameters(for: input.shape, size: outputSize, in: self), module: self)
        return (output, backward)
    }
}

/// The inverse of max pooling with indices, as PyTorch's `nn.MaxUnpool2d`: each input value is
/// written at its index (ih · W + iw) in a zero output plane of size
/// (H − 1) · stride − 2 · pad + kernel (or `outputSize`). Its backward gathers the gradient back
/// from the same indices.
public struct MaxUnpool2D: Sendable, CustomStringConvertible {
    let window: PoolWindow

    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) throws {
        window = PoolWindow(kernel: (kernelSize, kernelSize), stride: (stride ?? kernelSize, stride ?? kernelSize),
                            padding: (padding, padding), dilation: (1, 1), ceilMode: false)
        guard kernelSize > 0, window.stride.0 > 0, padding >= 0 else {
            throw BackpropError(.invalidArgument, "MaxUnpool2D(\(window.description)): sizes must be positive")
        }
    }

    public var description: String { "MaxUnpool2D(\(window.description))" }

    public func callAsFunction(_ input: Tensor, indices: [Int], outputSize: (Int, Int)? = nil) throws
        -> (output: Tensor, backward: (Tensor) throws -> Tensor) {
        guard input.rank == 4, input.shape.allSatisfy({ $0 > 0 }) else {
            throw BackpropError(.shapeMismatch, "\(self): input has shape \(describe(input.shape)), expected [N, C, H, W]")
        }
        guard indices.count == input.count else {
            throw BackpropError(.shapeMismatch, "\(self): \(indices.count) indices for input \(describe(input.shape)), expected \(input.count)")
        }
        let size = outputSize ?? ((input.shape[2] - 1) * window.stride.0 - 2 * window.padding.0 + window.kernel.0,
                                  (input.shape[3] - 1) * window.stride.1 - 2 * window.padding.1 + window.kernel.1)
        let plane = size.0 * size.1, inPlane = input.shape[2] * input.shape[3]
        if let bad = indices.firstIndex(where: { !(0..<plane).contains($0) }) {
            throw BackpropError(.invalidArgument, "\(self): index \(indices[bad]) at \(bad) is outside the \(size.0)x\(size.1) output plane")
        }
        let outputShape = [input.shape[0], input.shape[1], size.0, size.1]
        var output = try Tensor(shape: outputShape)
        for i in 0..<input.count { output[(i / inPlane) * plane + indices[i]] = input[i] }
        return (output, { gradOutput in
            guard gradOutput.shape == outputShape else {
                throw BackpropError(.shapeMismatch, "\(self) backward: gradient has shape \(describe(gradOutput.shape)), expected \(describe(outputShape))")
            }
            return try Tensor(shape: input.shape, scalars: (0..<input.count).map { gradOutput[($0 / inPlane) * plane + indices[$0]] })
        })
    }
}

// MARK: - Average pooling

/// Average pooling over the windows `p` describes; the backward spreads each gradient evenly over
/// its window with the same divisor. Saves nothing but the input's shape.
func averagePool(_ input: Tensor, _ parameters: bp_pool2d_params, module: Module) -> (output: Tensor, backward: Backward) {
    var p = parameters
    let outputShape = [input.shape[0], input.shape[1], Int(p.out_h), Int(p.out_w)]
    let output = input.withPointer { x in Tensor.filled(outputShape) { bp_avgpool2d_forward($0, x, &p) } }
    let inputShape = input.shape
    return (output, { gradOutput in
        try checkGradient(gradOutput, matches: outputShape, in: module)
        return gradOutput.withPointer { dy in Tensor.filled(inputShape) { bp_avgpool2d_backward($0, dy, &p) } }
    })
}

/// Average pooling, as PyTorch's `nn.AvgPool2d`: kernel, stride (default: the kernel), padding
/// (zeros, at most half the kernel), ceil mode, whether the padding counts in the divisor, and
/// a divisor override.
public final class AvgPool2D: Module {
    let window: PoolWindow
    public let countIncludePad: Bool
    public let divisorOverride: Int?
    public var isTraining = true

    public init(kernelSize: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0), ceilMode: Bool = false,
                countIncludePad: Bool = true, divisorOverride: Int? = nil) throws {
        window = PoolWindow(kernel: kernelSize, stride: stride ?? kernelSize, padding: padding, dilation: (1, 1),
                            ceilMode: ceilMode)
        self.countIncludePad = countIncludePad
        self.divisorOverride = divisorOverride
        try window.validate(description)
        if let divisorOverride, divisorOverride <= 0 {
            throw BackpropError(.invalidArgument, "\(description): divisor override must be positive")
        }
    }

    public convenience init(kernelSize: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false,
                            countIncludePad: Bool = true, divisorOverride: Int? = nil) throws {
        try self.init(kernelSize: (kernelSize, kernelSize), stride: stride.map { ($0, $0) }, padding: (padding, padding),
                      ceilMode: ceilMode, countIncludePad: countIncludePad, divisorOverride: divisorOverride)
    }

    public var description: String {
        "AvgPool2D(\(window.description)\(countIncludePad ? "" : ", excluding padding")"
            + "\(divisorOverride.map { ", divisor: \($0)" } ?? ""))"
    }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        averagePool(input, try window.parameters(for: input.shape, in: self, countIncludePad: countIncludePad,
                                                 divisorOverride: divisorOverride ?? 0), module: self)
    }
}

/// Adaptive average pooling to a fixed output size, as PyTorch's `nn.AdaptiveAvgPool2d`
/// (the windows of AdaptiveMaxPool2D, each averaged over its own size).
public final class AdaptiveAvgPool2D: Module {
    public let outputSize: (height: Int, width: Int)
    public var isTraining = true

    public init(outputSize: (Int, Int)) throws {
        self.outputSize = outputSize
        try checkOutputSize(outputSize, "AdaptiveAvgPool2D")
    }

    public var description: String { "AdaptiveAvgPool2D(\(outputSize.height)x\(outputSize.width))" }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        averagePool(input, try adaptiveParameters(for: input.shape, size: outputSize, in: self), module: self)
    }
}

/// The mean of each plane: x [N, C, H, W] → u [N, C, 1, 1], as `nn.AdaptiveAvgPool2d(1)`.
public final class GlobalAvgPool2D: Module {
    public var isTraining = true

    public init() {}

    public var description: String { "GlobalAvgPool2D()" }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        averagePool(input, try adaptiveParameters(for: input.shape, size: (1, 1), in: self), module: self)
    }
}
