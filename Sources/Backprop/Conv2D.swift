import CKernels

/// A 2-D convolution (cross-correlation, as PyTorch's `nn.Conv2d`) over NCHW input:
/// x [N, C, H, W] → u [N, K, OH, OW], weight [K, C / groups, kh, kw], bias [K], with
/// OH = ⌊(H + pad_top + pad_bottom − dilation_h (kh − 1) − 1) / stride_h⌋ + 1 (and OW alike).
///
/// Backward: ∂J/∂x is the transposed convolution of v; ∂J/∂W += the correlation of v with x;
/// ∂J/∂b += Σ over N, OH, OW of v. Memory: the forward allocates the output (its scratch, and the
/// backward's, is in the README's memory table); the backward the input gradient, per thread one
/// image's column gradient ((C / groups) · kh · kw × OH · OW floats; beyond 4 MB a ring of its
/// rows, about 512 KB), and for the weight gradient up to 4 weight-sized partial sums. The three products run in `Precision.current`
/// as the forward found it.
public final class Conv2D: Module {
    public let inChannels: Int
    public let outChannels: Int
    public let kernelSize: Size2D
    public let stride: Size2D
    public let padding: Padding
    public let dilation: Size2D
    public let groups: Int
    public let weight: Parameter
    public let bias: Parameter?
    public var isTraining = true

    public init(
        _ inChannels: Int, _ outChannels: Int, kernelSize: Size2D, stride: Size2D = 1, padding: Padding = .valid,
        dilation: Size2D = 1, groups: Int = 1, bias: Bool = true,
        initialization: WeightInitialization = .pytorchDefault,
        seed: UInt64 = 0
    ) throws {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        let name = Conv2D.describe(inChannels, outChannels, kernelSize, stride, padding, dilation, groups)
        try validateConvolution(
            name, inChannels: inChannels, outChannels: outChannels, kernel: kernelSize,
            stride: stride, dilation: dilation, groups: groups)
        if case .explicit(let size) = padding, size.height < 0 || size.width < 0 {
            throw BackpropError(.invalidArgument, "\(name): padding must be >= 0")
        }
        if padding == .same, stride != 1 {
            throw BackpropError(.invalidArgument, "\(name): padding 'same' needs stride 1, as in PyTorch")
        }
        (weight, self.bias) = try convolutionParameters(
            weightShape: [outChannels, inChannels / groups, kernelSize.height, kernelSize.width], bias: bias,
            initialization: initialization, seed: seed)
    }

    static func describe(
        _ c: Int, _ k: Int, _ kernel: Size2D, _ stride: Size2D, _ padding: Padding,
        _ dilation: Size2D, _ groups: Int
    ) -> String {
        "Conv2D(in: \(c), out: \(k), kernel: \(kernel), stride: \(stride), padding: \(padding), dilation: \(dilation)"
            + "\(groups > 1 ? ", groups: \(groups)" : ""))"
    }

    public var description: String {
        Conv2D.describe(inChannels, outChannels, kernelSize, stride, padding, dilation, groups)
    }

    public var ownParameters: [(name: String, parameter: Parameter)] {
        weightAndBias(weight, bias)
    }

    /// The kernels' geometry for an input of `shape`, or a thrown error naming what does not fit.
    func geometry(for shape: [Int]) throws -> bp_conv2d_params {
        try checkImageInput(shape, channels: inChannels, self)
        let (top, bottom, left, right) = padding.amounts(kernel: kernelSize, dilation: dilation)
        let spanH = dilation.height * (kernelSize.height - 1) + 1, spanW = dilation.width * (kernelSize.width - 1) + 1
        let (paddedH, paddedW) = (shape[2] + top + bottom, shape[3] + left + right)
        guard spanH <= paddedH, spanW <= paddedW else {
            throw BackpropError(
                .shapeMismatch,
                "\(self): the kernel spans \(spanH)x\(spanW) but the padded input \(Backprop.describe(shape)) is \(paddedH)x\(paddedW)"
            )
        }
        return bp_conv2d_params(
            n: Int64(shape[0]), c: Int64(inChannels), h: Int64(shape[2]), w: Int64(shape[3]),
            k: Int64(outChannels), out_h: Int64((paddedH - spanH) / stride.height + 1),
            out_w: Int64((paddedW - spanW) / stride.width + 1), r: Int64(kernelSize.height),
            s: Int64(kernelSize.width), stride_h: Int64(stride.height), stride_w: Int64(stride.width),
            pad_h: Int64(top), pad_w: Int64(left), dilation_h: Int64(dilation.height),
            dilation_w: Int64(dilation.width), groups: Int64(groups))
    }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        try convolution(
            self, input, weight: weight, bias: bias, geometry: geometry(for: input.shape), transposed: false
        ).full
    }

    public func forwardWithoutInputGradient(_ input: Tensor) throws -> (output: Tensor, backward: ParameterBackward) {
        try convolution(
            self, input, weight: weight, bias: bias, geometry: geometry(for: input.shape),
            transposed: false
        ).parametersOnly
    }
}

/// Forward and backward of a convolution module over the convolution `geometry` (its input side
/// is x [n, c, h, w], its output side y [n, k, out_h, out_w]). Conv2D maps x to y: forward is the
/// convolution, its input gradient the backward-data. ConvTranspose2D (`transposed`) maps y to x:
/// forward is the backward-data, its input gradient the convolution. Either way the weight gradient
/// is the correlation of the y-side gradient with the x-side tensor, and the bias belongs to the
/// output side.
func convolution(
    _ module: Module, _ input: Tensor, weight: Parameter, bias: Parameter?,
    geometry: bp_conv2d_params, transposed: Bool
) throws -> SplitPass {
    var p = geometry
    let outputShape =
        transposed ? [Int(p.n), Int(p.c), Int(p.h), Int(p.w)] : [Int(p.n), Int(p.k), Int(p.out_h), Int(p.out_w)]
    let kernels = ConvolutionKernels(precision: Precision.kernelCode)
    let forwardKernel = transposed ? kernels.backwardData : kernels.forward
    let inputGradientKernel = transposed ? kernels.forward : kernels.backwardData
    let output = try input.withPointer { x in
        try weight.value.withPointer { w in
            try withOptionalPointer(bias?.value) { b in
                try Tensor.computed(outputShape, by: module) { y in forwardKernel(y, x, w, b, &p) }
            }
        }
    }
    // The input is read again only by the weight gradient's products (as x, or as the transpose's y).
    let saved = SavedTensor(input), inputShape = input.shape
    return SplitPass(
        output: output,
        parameterBackward: { gradOutput in
            try checkGradient(gradOutput, matches: outputShape, in: module)
            var p = geometry, missing: Int64 = 0
            let kept = saved.tensor
            let (ySide, xSide) = transposed ? (kept, gradOutput) : (gradOutput, kept)
            // Conv2D's bias is on the y side: its gradient is summed with the weight gradient.
            // ConvTranspose2D's is on the x side (its output): summed over the gradient's planes.
            ySide.withPointer { dy in
                xSide.withPointer { x in
                    weight.grad.withMutablePointer { dw in
                        withOptionalMutablePointer(transposed ? nil : bias) { db in
                            missing = kernels.backwardWeights(dw, db, dy, x, &p)
                        }
                    }
                }
            }
            try checkAllocation(missing, module)
            if transposed, let bias {
                gradOutput.withPointer { v in
                    bias.grad.withMutablePointer { bp_channel_bias_backward($0, v, p.n, p.c, p.h * p.w) }
                }
            }
        },
        inputBackward: { gradOutput in
            var p = geometry
            return try gradOutput.withPointer { v in
                try weight.value.withPointer { w in
                    try Tensor.computed(inputShape, by: module) { inputGradientKernel($0, v, w, nil, &p) }
                }
            }
        })
}

/// The three convolution kernels in a precision (`Precision.kernelCode`): float32's, or the
/// bfloat16 products' (on the instruction or its emulation).
struct ConvolutionKernels {
    typealias Forward = (
        UnsafeMutablePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?,
        UnsafePointer<bp_conv2d_params>?
    ) -> Int64
    typealias Weights = (
        UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?,
        UnsafePointer<bp_conv2d_params>?
    ) -> Int64
    let forward: Forward, backwardData: Forward, backwardWeights: Weights

    init(precision: Int32) {
        guard precision != Int32(BP_FP32) else {
            (forward, backwardData, backwardWeights) = (
                bp_conv2d_forward, bp_conv2d_backward_data, bp_conv2d_backward_weights
            )
            return
        }
        let emulate: Int32 = precision == Int32(BP_BF16_EMULATED) ? 1 : 0
        forward = { bp_conv2d_forward_bf16($0, $1, $2, $3, $4, emulate) }
        backwardData = { bp_conv2d_backward_data_bf16($0, $1, $2, $3, $4, emulate) }
        backwardWeights = { bp_conv2d_backward_weights_bf16($0, $1, $2, $3, $4, emulate) }
    }
}

/// A convolution's weight and bias drawn from one generator, as PyTorch draws them: fan-in and fan-out
/// from the weight's axes 1 and 0 times the kernel area (for the transpose, [Cin, Cout / groups, kh, kw],
/// that makes the fan-in Cout / groups · kh · kw, as in PyTorch); the bias has one value per output channel.
func convolutionParameters(
    weightShape: [Int], bias: Bool, outChannels: Int? = nil,
    initialization: WeightInitialization, seed: UInt64
) throws -> (Parameter, Parameter?) {
    let area = weightShape[2] * weightShape[3]
    let (fanIn, fanOut) = (weightShape[1] * area, weightShape[0] * area)
    var generator = SplitMix64(seed: seed)
    let weight = Parameter(
        try initialization.weight(shape: weightShape, fanIn: fanIn, fanOut: fanOut, using: &generator))
    let count = outChannels ?? weightShape[0]
    return (
        weight, bias ? Parameter(try WeightInitialization.bias(count: count, fanIn: fanIn, using: &generator)) : nil
    )
}

/// The checks Conv2D and ConvTranspose2D share: sizes positive, groups dividing both channel counts.
func validateConvolution(
    _ name: String, inChannels: Int, outChannels: Int, kernel: Size2D,
    stride: Size2D, dilation: Size2D, groups: Int
) throws {
    guard inChannels > 0, outChannels > 0 else {
        throw BackpropError(.invalidArgument, "\(name): channel counts must be positive")
    }
    try validateWindow(name, kernel: kernel, stride: stride, dilation: dilation)
    guard groups > 0, inChannels % groups == 0, outChannels % groups == 0 else {
        throw BackpropError(
            .invalidArgument,
            "\(name): groups (\(groups)) must divide both in (\(inChannels)) and out (\(outChannels)) channels")
    }
}
