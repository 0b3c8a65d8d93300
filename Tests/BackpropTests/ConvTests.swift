import Backprop
import BackpropTestSupport
import Testing

@Suite struct ConvTests {
    @Test(
        "Conv2D gradient check",
        arguments: [
            (stride: 1, padding: 1, dilation: 1, groups: 1), (2, 0, 1, 1), (1, 2, 2, 1), (1, 1, 1, 2), (2, 1, 1, 4),
        ])
    func conv2DGradients(stride: Int, padding: Int, dilation: Int, groups: Int) throws {
        let layer = try Conv2D(
            4, 4, kernelSize: 3, stride: Size2D(square: stride), padding: .explicit(Size2D(square: padding)),
            dilation: Size2D(square: dilation), groups: groups, seed: 3)
        try expectGradientsCorrect(layer, input: randomTensor([2, 4, 7, 6], seed: 1))
    }

    /// 32 input channels, 3 × 3 with padding 1 on small images: where the CPU has AVX-512, the forward,
    /// the input gradient (as a forward of the flipped kernel) and the weight gradient run the
    /// kernels that skip the padding (conv2d_direct.c); elsewhere the product, with the same bits.
    @Test func conv2DGradientsThroughThePaddingSkippingKernels() throws {
        let layer = try Conv2D(32, 8, kernelSize: 3, padding: 1, seed: 4)
        try expectGradientsCorrect(layer, input: randomTensor([2, 32, 6, 7], seed: 5))
    }

    /// 2 × 2, 3 × 3 and 5 × 5, stride 1, 16 or more channels each way: the forward, the input gradient (the
    /// forward of the flipped kernel, padding r − 1 − p) and the weight gradient run by Winograd's
    /// F(2 × 2, r × r) (conv2d_winograd.c); odd output sizes leave the last tiles half outside.
    @Test func conv2DGradientsThroughWinograd() throws {
        try expectGradientsCorrect(
            try Conv2D(16, 17, kernelSize: 3, padding: 1, seed: 10), input: randomTensor([2, 16, 5, 7], seed: 11))
        try expectGradientsCorrect(
            try Conv2D(18, 16, kernelSize: 3, padding: 0, seed: 12), input: randomTensor([1, 18, 6, 9], seed: 13))
        try expectGradientsCorrect(
            try Conv2D(16, 16, kernelSize: 5, padding: 2, seed: 14), input: randomTensor([1, 16, 7, 6], seed: 15))
        try expectGradientsCorrect(
            try Conv2D(16, 16, kernelSize: 2, padding: 1, seed: 16), input: randomTensor([1, 16, 5, 6], seed: 17))
    }

    /// Stride 2 with a 4 × 4 kernel, 4 or more input and 16 or more output channels (of the
    /// convolution; a transposed one the other way round): a stride-1 2 × 2 convolution over the
    /// input's four phases stacked as channels, by Winograd (conv2d_phases.c), all three passes.
    @Test func stride2GradientsThroughThePhases() throws {
        try expectGradientsCorrect(
            try Conv2D(4, 16, kernelSize: 4, stride: 2, padding: 1, seed: 18),
            input: randomTensor([2, 4, 7, 8], seed: 19))
        try expectGradientsCorrect(
            try ConvTranspose2D(16, 4, kernelSize: 4, stride: 2, padding: 1, seed: 20),
            input: randomTensor([1, 16, 3, 4], seed: 21))
    }

    /// 1 × 1 without stride or padding: the forward and the weight gradient run as plain products
    /// of the tensors, and on images of fewer than 128 pixels the input gradient as one transposed
    /// product over all images (conv2d.c's pointwise section); with two groups too.
    @Test func conv2DGradientsThroughThePointwiseProducts() throws {
        try expectGradientsCorrect(
            try Conv2D(6, 5, kernelSize: 1, seed: 6), input: randomTensor([3, 6, 4, 5], seed: 7))
        try expectGradientsCorrect(
            try Conv2D(6, 4, kernelSize: 1, groups: 2, seed: 8), input: randomTensor([2, 6, 3, 3], seed: 9))
    }

    @Test func conv2DSamePaddingKeepsTheSize() throws {
        // An even kernel: 'same' pads 1 before and 2 after (dilation 1, kernel 4: 3 zeros in all).
        let layer = try Conv2D(2, 3, kernelSize: Size2D(4, 3), padding: .same, seed: 1)
        let x = randomTensor([1, 2, 5, 6], seed: 2)
        #expect(try layer(x).shape == [1, 3, 5, 6])
        try expectGradientsCorrect(layer, input: x)
        #expect(try Conv2D(2, 3, kernelSize: Size2D(3, 3), padding: .valid)(x).shape == [1, 3, 3, 4])
    }

    @Test(
        "ConvTranspose2D gradient check",
        arguments: [
            (stride: 1, padding: 0, outputPadding: 0, groups: 1), (2, 1, 1, 1), (2, 0, 0, 2), (3, 1, 2, 1),
        ])
    func convTransposeGradients(stride: Int, padding: Int, outputPadding: Int, groups: Int) throws {
        let layer = try ConvTranspose2D(
            4, 2, kernelSize: 3, stride: Size2D(square: stride),
            padding: .explicit(Size2D(square: padding)),
            outputPadding: Size2D(square: outputPadding), groups: groups, seed: 5)
        try expectGradientsCorrect(layer, input: randomTensor([2, 4, 3, 4], seed: 6))
    }

    /// A transposed convolution is the adjoint of the convolution with the same weight:
    /// ⟨conv(x), v⟩ = ⟨x, convT(v)⟩ for every x and v.
    @Test func transposeIsTheAdjoint() throws {
        let conv = try Conv2D(3, 4, kernelSize: 3, stride: 2, padding: 1, bias: false, seed: 1)
        let transpose = try ConvTranspose2D(4, 3, kernelSize: 3, stride: 2, padding: 1, bias: false)
        try transpose.weight.load(conv.weight.value, name: "weight")
        let x = randomTensor([2, 3, 7, 7], seed: 2)
        let y = try conv(x)
        let v = randomTensor(y.shape, seed: 3)
        let back = try transpose(v)
        #expect(back.shape == x.shape)
        let left = zip(y.scalars, v.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let right = zip(x.scalars, back.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        #expect(abs(left - right) < 1e-4 * max(1, abs(left)))
    }

    @Test func pytorchShapesAndInitialisation() throws {
        let conv = try Conv2D(6, 4, kernelSize: 3, groups: 2, seed: 1)
        #expect(conv.weight.value.shape == [4, 3, 3, 3])
        let bound = 1 / Float(3 * 9).squareRoot()
        #expect(conv.weight.value.scalars.allSatisfy { abs($0) <= bound })
        let transpose = try ConvTranspose2D(6, 4, kernelSize: 2, groups: 2)
        #expect(transpose.weight.value.shape == [6, 2, 2, 2])
        #expect(try transpose(Tensor(shape: [1, 6, 3, 3])).shape == [1, 4, 4, 4])
    }

    @Test func badInputThrows() throws {
        expectError(.invalidArgument, mentioning: ["Conv2D(in: 3, out: 8", "stride must be positive"]) {
            _ = try Conv2D(3, 8, kernelSize: 3, stride: 0)
        }
        expectError(.invalidArgument, mentioning: ["dilation must be positive"]) {
            _ = try Conv2D(3, 8, kernelSize: 3, dilation: 0)
        }
        expectError(.invalidArgument, mentioning: ["groups (2) must divide", "in (3)"]) {
            _ = try Conv2D(3, 8, kernelSize: 3, groups: 2)
        }
        expectError(.invalidArgument, mentioning: ["channel counts"]) { _ = try Conv2D(0, 8, kernelSize: 3) }
        expectError(.invalidArgument, mentioning: ["'same' needs stride 1"]) {
            _ = try Conv2D(3, 8, kernelSize: Size2D(3, 3), stride: Size2D(2, 2), padding: .same)
        }
        let conv = try Conv2D(3, 8, kernelSize: 3)
        expectError(
            .shapeMismatch, mentioning: ["Conv2D(in: 3, out: 8, kernel: 3x3", "[2, 4, 5, 5]", "expected [N, 3, H, W]"]
        ) {
            _ = try conv(Tensor(shape: [2, 4, 5, 5]))
        }
        expectError(.shapeMismatch, mentioning: ["[3, 5, 5]"]) { _ = try conv(Tensor(shape: [3, 5, 5])) }
        expectError(.shapeMismatch, mentioning: ["kernel spans 3x3", "padded input", "is 2x5"]) {
            _ = try conv(Tensor(shape: [1, 3, 2, 5]))
        }
        expectError(.invalidArgument, mentioning: ["ConvTranspose2D", "output padding must be smaller"]) {
            _ = try ConvTranspose2D(3, 2, kernelSize: 3, stride: 2, outputPadding: 2)
        }
        expectError(.shapeMismatch, mentioning: ["ConvTranspose2D", "padding is too large"]) {
            _ = try ConvTranspose2D(3, 2, kernelSize: 1, padding: 2)(Tensor(shape: [1, 3, 2, 2]))
        }
    }
}
