import CKernels

/// The argmax of every window, one byte each when windows have at most BP_ARGMAX8_MAX_TAPS taps.
enum Argmax {
    case bytes([UInt8])
    case words([Int32])
}

/// An argmax kept for a backward, counted as tensor storage is.
final class KeptArgmax: CountedStorage, @unchecked Sendable {
    let argmax: Argmax

    init(_ argmax: Argmax) {
        self.argmax = argmax
        switch argmax {
        case .bytes(let indices): super.init(bytes: indices.count)
        case .words(let indices): super.init(bytes: indices.count * MemoryLayout<Int32>.stride)
        }
    }
}

/// Max pooling over the windows `p` describes: u = max over each window (NaN wins; ties go to
/// the first maximum in row-major window order); the backward routes each gradient to its
/// window's argmax. Saves the argmax: one byte per output (4 for larger windows).
func maxPool(
    _ input: Tensor, _ parameters: bp_pool2d_params, module: Module
) throws
    -> (output: Tensor, argmax: Argmax, backward: Backward)
{
    var p = parameters, missing: Int64 = 0
    let outputShape = [input.shape[0], input.shape[1], Int(p.out_h), Int(p.out_w)]
    let count = outputShape.reduce(1, *)
    // The kernel writes every output and every argmax: both start uninitialised (zeroing the
    // argmax first cost a single-threaded pass over it).
    var argmax: Argmax = .bytes([])
    let output = input.withPointer { x in
        Tensor.filled(outputShape) { y in
            if bp_pool2d_window_size(&p) <= BP_ARGMAX8_MAX_TAPS {
                argmax = .bytes(uninitializedArray(count) { missing = bp_maxpool2d_forward(y, $0, nil, x, &p) })
            } else {
                argmax = .words(uninitializedArray(count) { missing = bp_maxpool2d_forward(y, nil, $0, x, &p) })
            }
        }
    }
    try checkAllocation(missing, module)
    let saved = KeptArgmax(argmax), inputShape = input.shape  // the backward keeps the argmax, not the input
    return (
        output, argmax,
        { gradOutput in
            try checkGradient(gradOutput, matches: outputShape, in: module)
            var p = parameters, missing: Int64 = 0
            let dx = gradOutput.withPointer { dy in
                Tensor.filled(inputShape) { dx in
                    switch saved.argmax {
                    case .bytes(let indices): missing = bp_maxpool2d_backward(dx, dy, indices, nil, &p)
                    case .words(let indices): missing = bp_maxpool2d_backward(dx, dy, nil, indices, &p)
                    }
                }
            }
            try checkAllocation(missing, module)
            return dx
        }
    )
}

/// Max pooling, as PyTorch's `nn.MaxPool2d`: kernel, stride (default: the kernel), padding (implicit
/// −∞, at most half the kernel), dilation and ceil mode. x [N, C, H, W] → u [N, C, OH, OW].
/// Memory: the forward saves one byte per output (the argmax within its window).
public final class MaxPool2D: Module {
    let window: PoolWindow
    public var isTraining = true

    public init(
        kernelSize: Size2D, stride: Size2D? = nil, padding: Padding = 0, dilation: Size2D = 1,
        ceilMode: Bool = false
    ) throws {
        let name = "MaxPool2D(kernel: \(kernelSize))"
        window = try PoolWindow(
            name, kernel: kernelSize, stride: stride, padding: padding, dilation: dilation, ceilMode: ceilMode)
    }

    public var description: String { "MaxPool2D(\(window.description))" }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        let (output, _, backward) = try maxPool(input, window.parameters(for: input.shape, in: self), module: self)
        return (output, backward)
    }

    /// The forward with PyTorch's `return_indices`: each output's argmax as ih · W + iw in its plane
    /// (what MaxUnpool2D takes).
    public func forwardWithIndices(_ input: Tensor) throws -> (output: Tensor, indices: [Int], backward: Backward) {
        var p = try window.parameters(for: input.shape, in: self)
        let (output, argmax, backward) = try maxPool(input, p, module: self)
        var indices = [Int64](repeating: 0, count: output.count)
        let missing =
            switch argmax {
            case .bytes(let taps): bp_maxpool2d_plane_indices(&indices, taps, nil, &p)
            case .words(let taps): bp_maxpool2d_plane_indices(&indices, nil, taps, &p)
            }
        try checkAllocation(missing, self)
        return (output, indices.map(Int.init), backward)
    }
}

/// The inverse of max pooling with indices, as PyTorch's `nn.MaxUnpool2d`: each input value is
/// written at its index (ih · W + iw, from `MaxPool2D.forwardWithIndices`) in a zero output plane of
/// size (H − 1) · stride − 2 · pad + kernel (or `outputSize`). Its backward gathers the gradient back
/// from the same indices. Like PyTorch's, it needs the indices as a second input, so it runs through
/// `forward(_:indices:outputSize:)`: `forward(_:)` alone (as inside a Sequential) throws.
public final class MaxUnpool2D: Module {
    public let kernelSize: Size2D
    public let stride: Size2D
    public let padding: Size2D
    public var isTraining = true

    public init(kernelSize: Size2D, stride: Size2D? = nil, padding: Padding = 0) throws {
        let name = "MaxUnpool2D(kernel: \(kernelSize))"
        try validateWindow(name, kernel: kernelSize, stride: stride ?? kernelSize, dilation: 1)
        (self.kernelSize, self.stride, self.padding) = (kernelSize, stride ?? kernelSize, try padding.symmetric(name))
    }

    public var description: String { "MaxUnpool2D(kernel: \(kernelSize), stride: \(stride), padding: \(padding))" }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        throw BackpropError(
            .invalidArgument, "\(self): needs the indices of its max pooling; call forward(_:indices:outputSize:)")
    }

    /// u [N, C, OH, OW] with u[n, c, indices[n, c, i] / OW, indices[n, c, i] % OW] = x[n, c, i] and zeros
    /// elsewhere (of repeated indices the last wins); the backward gathers v at the same places.
    public func forward(
        _ input: Tensor, indices: [Int], outputSize: Size2D? = nil
    ) throws -> (output: Tensor, backward: Backward) {
        guard input.rank == 4, input.shape.allSatisfy({ $0 > 0 }) else {
            throw BackpropError(
                .shapeMismatch, "\(self): input has shape \(describe(input.shape)), expected [N, C, H, W]")
        }
        guard indices.count == input.count else {
            throw BackpropError(
                .shapeMismatch,
                "\(self): \(indices.count) indices for input \(describe(input.shape)), expected \(input.count)")
        }
        let size =
            outputSize
            ?? Size2D(
                (input.shape[2] - 1) * stride.height - 2 * padding.height + kernelSize.height,
                (input.shape[3] - 1) * stride.width - 2 * padding.width + kernelSize.width)
        guard size.isPositive else {
            throw BackpropError(.invalidArgument, "\(self): output size \(size) is not positive")
        }
        let (planes, inPlane, outPlane) = (
            input.shape[0] * input.shape[1], input.shape[2] * input.shape[3], size.height * size.width
        )
        if let bad = indices.firstIndex(where: { !(0..<outPlane).contains($0) }) {
            throw BackpropError(
                .invalidArgument, "\(self): index \(indices[bad]) at \(bad) is outside the \(size) output plane")
        }
        let outputShape = [input.shape[0], input.shape[1], size.height, size.width]
        let at = indices.map(Int64.init)
        let output = input.withPointer { x in
            Tensor.filled(outputShape) {
                bp_maxunpool2d_forward($0, x, at, Int64(planes), Int64(inPlane), Int64(outPlane))
            }
        }
        return (
            output,
            { gradOutput in
                try checkGradient(gradOutput, matches: outputShape, in: self)
                return gradOutput.withPointer { dy in
                    Tensor.filled(input.shape) {
                        bp_maxunpool2d_backward($0, dy, at, Int64(planes), Int64(inPlane), Int64(outPlane))
                    }
                }
            }
        )
    }
}
