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
    public let kernelSize: (height: Int, width: Int)
    public let stride: (height: Int, width: Int)
    public let padding: (height: Int, width: Int)
    public let outputPadding: (height: Int, width: Int)
    public let dilation: (height: Int, width: Int)
    public let groups: Int
    public let weight: Parameter
    public let bias: Parameter?
    public var isTraining = true

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1),
                padding: (Int, Int) = (0, 0), outputPadding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1),
                groups: Int = 1, bias: Bool = true, initialization: WeightInitialization = .pytorchDefault,
                seed: UInt64 = 0) throws {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.outputPadding = outputPadding
        self.dilation = dilation
        self.groups = groups
        let name = ConvTranspose2D.describe(inChannels, outChannels, kernelSize, stride, padding, outputPadding, dilation, groups)
        try validateConvolution(name, inChannels: inChannels, outChannels: outChannels, kernel: kernelSize,
                                stride: stride, dilation: dilation, groups: groups)
        guard padding.0 >= 0, padding.1 >= 0, outputPadding.0 >= 0, outputPadding.1 >= 0 else {
            throw BackpropError(.invalidArgument, "\(name): padding and output padding must be >= 0")
        }
        guard outputPadding.0 < max(stride.0, dilation.0), outputPadding.1 < max(stride.1, dilation.1) else {
            throw BackpropError(.invalidArgument, "\(name): output padding must be smaller than either stride or dilation")
        }
        (weight, self.bias) = try convolutionParameters(
            weightShape: [inChannels, outChannels / groups, kernelSize.0, kernelSize.1], bias: bias,
            outChannels: outChannels, initialization: initialization, seed: seed)
    }

    /// Square kernel, stride, padding, output padding and dilation.
    public convenience init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                            outputPadding: Int = 0, dilation: Int = 1, groups: Int = 1, bias: Bool = true,
                            initialization: WeightInitialization = .pytorchDefault, seed: UInt64 = 0) throws {
        try self.init(inChannels, outChannels, kernelSize: (kernelSize, kernelSize), stride: (stride, stride),
                      padding: (padding, padding), outputPadding: (outputPadding, outputPadding),
                      dilation: (dilation, dilation), groups: groups, bias: bias, initialization: initialization, seed: seed)
    }

    static func describe(_ c: Int, _ k: Int, _ kernel: (Int, Int), _ stride: (Int, Int), _ padding: (Int, Int),
                         _ outputPadding: (Int, Int), _ dilation: (Int, Int), _ groups: Int) -> String {
        "ConvTranspose2D(in: \(c), out: \(k), kernel: \(kernel.0)x\(kernel.1), stride: \(stride.0)x\(stride.1), "
            + "padding: \(padding.0)x\(padding.1), output padding: \(outputPadding.0)x\(outputPadding.1), "
            + "dilation: \(dilation.0)x\(dilation.1)\(groups > 1 ? ", groups: \(groups)" : ""))"
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
        let outH = (shape[2] - 1) * stride.0 - 2 * padding.0 + dilation.0 * (kernelSize.0 - 1) + outputPadding.0 + 1
        let outW = (shape[3] - 1) * stride.1 - 2 * padding.1 + dilation.1 * (kernelSize.1 - 1) + outputPadding.1 + 1
        guard outH > 0, outW > 0 else {
            throw BackpropError(.shapeMismatch,
                                "\(self): input \(Backprop.describe(shape)) gives an output of \(outH)x\(outW); the padding is too large")
        }
        return bp_conv2d_params(n: Int64(shape[0]), c: Int64(outChannels), h: Int64(outH), w: Int64(outW),
                                k: Int64(inChannels), out_h: Int64(shape[2]), out_w: Int64(shape[3]),
                                r: Int64(kernelSize.0), s: Int64(kernelSize.1), stride_h: Int64(stride.0),
                                stride_w: Int64(stride.1), pad_h: Int64(padding.0), pad_w: Int64(padding.1),
                                dilation_h: Int64(dilation.0), dilation_w: Int64(dilation.1), groups: Int64(groups))
    }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        try convolution(self, input, weight: weight, bias: bias, geometry: geometry(for: input.shape), transposed: true).full
    }

    public func forwardWithoutInputGradient(_ input: Tensor) throws -> (output: Tensor, backward: ParameterBackward) {
        try convolution(self, input, weight: weight, bias: bias, geometry: geometry(for: input.shape),
                        transposed: true).parametersOnly
    }
}
