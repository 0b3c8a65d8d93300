import Backprop
import BackpropTestSupport
import Testing

@Suite struct ModelSpecTests {
    @Test func parsesNestedSpecs() throws {
        let layers = try ModelSpec.parse("linear(4, 8) relu residual(linear(8,8) tanh) linear(8,2,bias=0)")
        #expect(layers.map(\.name) == ["linear", "relu", "residual", "linear"])
        #expect(layers[0].positional == [4, 8])
        #expect(layers[2].body.map(\.name) == ["linear", "tanh"])
        #expect(layers[3].keywords == ["bias": 0])
    }

    @Test func buildsANetworkNamedAsPyTorch() throws {
        let model = try ModelSpec.build("flatten linear(12,8) relu residual(linear(8,8) sigmoid) linear(8,3,bias=0)")
        #expect(model.namedParameters.map(\.name) == ["1.weight", "1.bias", "3.0.weight", "3.0.bias", "4.weight"])
        #expect(try model(Tensor(shape: [2, 3, 4])).shape == [2, 3])
        try expectGradientsCorrect(model, input: randomTensor([2, 3, 4], seed: 3))
    }

    @Test func sameSeedSameWeights() throws {
        let a = try ModelSpec.build("linear(3,3) linear(3,3)", seed: 5),
            b = try ModelSpec.build("linear(3,3) linear(3,3)", seed: 5)
        #expect(a.parameters.map(\.value) == b.parameters.map(\.value))
        #expect(a.parameters[0].value != a.parameters[2].value, "each layer draws its own weights")
    }

    /// Sizes past Tensor.maxElements are refused with an error that names the layer and how to raise
    /// the limit, for weights and for activations alike; nesting is bounded too.
    @Test func sizesAndNestingAreBounded() throws {
        expectError(.outOfMemory, mentioning: ["linear(100000000,100000000)", "BACKPROP_MAX_TENSOR_ELEMENTS"]) {
            _ = try ModelSpec.build("flatten linear(100000000,100000000)")
        }
        let upsample = try ModelSpec.build("conv_transpose2d(1,1,1,stride=100000)")
        expectError(.outOfMemory, mentioning: ["ConvTranspose2D", "more than the limit"]) {
            _ = try upsample(Tensor(shape: [1, 1, 100, 100]))
        }
        let nested = String(repeating: "residual(", count: 40) + "relu" + String(repeating: ")", count: 40)
        expectError(.format, mentioning: ["nest 40 levels deep", "at most 32"]) { _ = try ModelSpec.parse(nested) }
    }

    @Test func malformedSpecsGiveClearErrors() {
        expectError(.unsupported, mentioning: ["unknown layer 'softplus'"]) {
            _ = try ModelSpec.build("linear(2,2) softplus")
        }
        expectError(.format, mentioning: ["unbalanced '('"]) { _ = try ModelSpec.build("linear(2,2") }
        expectError(.format, mentioning: ["unbalanced ')'"]) { _ = try ModelSpec.build("relu)") }
        expectError(.format, mentioning: ["linear takes 2 positional arguments, got 1"]) {
            _ = try ModelSpec.build("linear(2)")
        }
        expectError(.format, mentioning: ["bad argument 'x'"]) { _ = try ModelSpec.build("linear(2,x)") }
        expectError(.format, mentioning: ["linear has no argument 'stride'"]) {
            _ = try ModelSpec.build("linear(2,2,stride=2)")
        }
        expectError(.format, mentioning: ["whole number", "2.5"]) { _ = try ModelSpec.build("linear(2.5,2)") }
        expectError(.format, mentioning: ["empty"]) { _ = try ModelSpec.build("   ") }
        expectError(.invalidArgument, mentioning: ["Linear(in: 0, out: 2)"]) { _ = try ModelSpec.build("linear(0,2)") }
    }
}
