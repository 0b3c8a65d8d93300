import CKernels

/// A 2-D transposed convolution (PyTorch's `nn.ConvTranspose2d`), the adjoint of Conv2D:
/// x [N, Cin, H, W] → u [N, Cout, OH, OW], weight [Cin, Cout / groups, kh, kw], bias [Cout], with
/// OH = (H − 1) · stride_h − 2 · pad_h + dilation_h (kh − 1) + output_padding_h + 1 (and OW alike).
///
/// Its forward is the convolution's backward-data, run on the convolution whose input is u and
/// whose output is x; its backward is that convolution's forward (∂J/∂x = conv(v)) and
/// backward-weights (∂J/∂W += correlation of x with v); ∂J/∂b += Σ over N, OH, OW of v.
public final class ConvTranspose2D: Module {
    public let inChannels: Int
    public let outChannels: Int
    public let kernelSize: Size2D
    public let stride: Size2D
    public let padding: Padding
    public let outputPadding: Size2D
    public let dilation: Size2D
    public let groups: Int
    public let weight: Parameter
    public let bias: Parameter?
    public var isTraining = true
    /// The padding's amounts on each axis ("same" is not for transposed convolutions).
    private let pad: Size2D

    public init(
        _ inChannels: Int, _ outChannels: Int, kernelSize: Size2D, stride: Size2D = 1, padding: Padding = 0,
        outputPadding: Size2D = 0, dilation: Size2D = 1, groups: Int = 1, bias: Bool = true,
        initialization: WeightInitialization = .pytorchDefault, seed: UInt64 = 0
    ) throws {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.outputPadding = outputPadding
        self.dilation = dilation
        self.groups = groups
        let name = ConvTranspose2D.describe(
            inChannels, outChannels, kernelSize, stride, padding, outputPadding, dilation, groups)
        try validateConvolution(
            name, inChannels: inChannels, outChannels: outChannels, kernel: kernelSize,
            stride: stride, dilation: dilation, groups: groups)
        pad = try padding.symmetric(name)
        guard outputPadding.height >= 0, outputPadding.width >= 0 else {
            throw BackpropError(.invalidArgument, "\(name): output padding must be >= 0")
        }
        guard outputPadding.height < max(stride.height, dilation.height),
            outputPadding.width < max(stride.width, dilation.width)
        else {
            throw BackpropError(
                .invalidArgument, "\(name): output padding must be smaller than either stride or dilation")
        }
        (weight, self.bias) = try convolutionParameters(
            weightShape: [inChannels, outChannels / groups, kernelSize.height, kernelSize.width], bias: bias,
            outChannels: outChannels, initialization: initialization, seed: seed)
    }

    static func describe(
        _ c: Int, _ k: Int, _ kernel: Size2D, _ stride: Size2D, _ padding: Padding,
        _ outputPadding: Size2D, _ dilation: Size2D, _ groups: Int
    ) -> String {
        "ConvTranspose2D(in: \(c), out: \(k), kernel: \(kernel), stride: \(stride), padding: \(padding), "
            + "output padding: \(outputPadding), dilation: \(dilation)\(groups > 1 ? ", groups: \(groups)" : ""))"
    }

    public var description: String {
        ConvTranspose2D.describe(inChannels, outChannels, kernelSize, stride, padding, outputPadding, dilation, groups)
    }

    public var ownParameters: [(name: String, parameter: Parameter)] {
        weightAndBias(weight, bias)
    }

    /// The geometry of the convolution this is the transpose of: its input is our output.
    func geometry(for shape: [Int]) throws -> bp_conv2d_params {
        try checkImageInput(shape, channels: inChannels, self)
        let outH =
            (shape[2] - 1) * stride.height - 2 * pad.height + dilation.height * (kernelSize.height - 1)
            + outputPadding.height + 1
        let outW =
            (shape[3] - 1) * stride.width - 2 * pad.width + dilation.width * (kernelSize.width - 1)
            + outputPadding.width + 1
        guard outH > 0, outW > 0 else {
            throw BackpropError(
                .shapeMismatch,
                "\(self): input \(Backprop.describe(shape)) gives an output of \(outH)x\(outW); the padding is too large"
            )
        }
        return bp_conv2d_params(
            n: Int64(shape[0]), c: Int64(outChannels), h: Int64(outH), w: Int64(outW),
            k: Int64(inChannels), out_h: Int64(shape[2]), out_w: Int64(shape[3]),
            r: Int64(kernelSize.height), s: Int64(kernelSize.width), stride_h: Int64(stride.height),
            stride_w: Int64(stride.width), pad_h: Int64(pad.height), pad_w: Int64(pad.width),
            dilation_h: Int64(dilation.height), dilation_w: Int64(dilation.width), groups: Int64(groups))
    }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        try convolution(self, input, weight: weight, bias: bias, geometry: geometry(for: input.shape), transposed: true)
            .full
    }

    public func forwardWithoutInputGradient(_ input: Tensor) throws -> (output: Tensor, backward: ParameterBackward) {
        try convolution(
            self, input, weight: weight, bias: bias, geometry: geometry(for: input.shape),
            transposed: true
        ).parametersOnly
    }
}
