import Backprop
import BackpropTestSupport
import CKernels
import Testing

/// A kernel that cannot get its scratch memory makes the module throw an error naming the module
/// and the bytes asked, in the forward and in the backward (the failure injected on this thread).
@Suite struct ModuleAllocationFailureTests {
    static func failing<R>(_ body: () throws -> R) rethrows -> R {
        bp_fail_allocation(1)
        defer { bp_fail_allocation(0) }
        return try body()
    }

    @Test(arguments: [
        "conv2d(2,3,3,pad=1)", "conv_transpose2d(2,3,3,stride=2)", "maxpool2d(3,stride=2,pad=1)",
        "avgpool2d(3,stride=1,pad=1)",
        "batchnorm2d(2)", "adaptive_maxpool2d(2,3)",
    ])
    func forwardAndBackwardThrow(spec: String) throws {
        let layer = try ModelSpec.build(spec, seed: 1).layers[0]
        let x = randomTensor([2, 2, 7, 6], seed: 2)
        expectError(.outOfMemory, mentioning: ["\(layer)", "could not allocate", "bytes"]) {
            _ = try Self.failing { try layer.forward(x) }
        }
        let (y, backward) = try layer.forward(x)
        expectError(.outOfMemory, mentioning: ["\(layer)", "could not allocate"]) {
            _ = try Self.failing { try backward(randomTensor(y.shape, seed: 3)) }
        }
        #expect(try backward(randomTensor(y.shape, seed: 3)).shape == x.shape)
    }

    @Test func layerNormBackwardThrows() throws {
        let layer = try LayerNorm(6)
        let (y, backward) = try layer.forward(randomTensor([4, 6], seed: 4))
        expectError(.outOfMemory, mentioning: ["LayerNorm([6])", "could not allocate"]) {
            _ = try Self.failing { try backward(y) }
        }
    }
}
