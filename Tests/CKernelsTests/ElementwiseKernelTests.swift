import BackpropTestSupport
import CKernels
import Foundation
import Testing

/// Each activation kernel against its formula evaluated in double, element by element.
@Suite struct ElementwiseKernelTests {
    typealias Forward = (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Int64) -> Void
    typealias Backward = (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int64) -> Void

    struct Activation: CustomStringConvertible, Sendable {
        let description: String
        let forward: @Sendable (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Int64) -> Void
        let backward: @Sendable (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int64) -> Void
        /// Whether the backward kernel reads the forward's output (else its input).
        let backwardReadsOutput: Bool
        let f: @Sendable (Double) -> Double
        let derivative: @Sendable (Double) -> Double
    }

    static let activations: [Activation] = [
        Activation(
            description: "relu", forward: { bp_relu_forward($0, $1, $2) },
            backward: { bp_relu_backward($0, $1, $2, $3) },
            backwardReadsOutput: false, f: { max($0, 0) }, derivative: { $0 > 0 ? 1 : 0 }),
        Activation(
            description: "leaky_relu(0.2)", forward: { bp_leaky_relu_forward($0, $1, 0.2, $2) },
            backward: { bp_leaky_relu_backward($0, $1, $2, 0.2, $3) },
            backwardReadsOutput: false, f: { $0 > 0 ? $0 : 0.2 * $0 }, derivative: { $0 > 0 ? 1 : 0.2 }),
        Activation(
            description: "sigmoid", forward: { bp_sigmoid_forward($0, $1, $2) },
            backward: { bp_sigmoid_backward($0, $1, $2, $3) },
            backwardReadsOutput: true, f: { 1 / (1 + exp(-$0)) },
            derivative: {
                let s = 1 / (1 + exp(-$0))
                return s * (1 - s)
            }),
        Activation(
            description: "tanh", forward: { bp_tanh_forward($0, $1, $2) },
            backward: { bp_tanh_backward($0, $1, $2, $3) },
            backwardReadsOutput: true, f: { tanh($0) }, derivative: { 1 - tanh($0) * tanh($0) }),
        Activation(
            description: "gelu", forward: { bp_gelu_forward($0, $1, $2) },
            backward: { bp_gelu_backward($0, $1, $2, $3) },
            backwardReadsOutput: false, f: { $0 * 0.5 * (1 + erf($0 / 2.0.squareRoot())) },
            derivative: {
                0.5 * (1 + erf($0 / 2.0.squareRoot())) + $0 * exp(-$0 * $0 / 2) / (2 * Double.pi).squareRoot()
            }),
    ]

    /// Sizes below and above the parallel threshold, with values including 0 and large magnitudes.
    @Test("forward and backward match the formula", arguments: activations, [1, 37, 70_001])
    func matchesFormula(_ activation: Activation, count: Int) {
        var random = TestRandom(seed: UInt64(count))
        var x = random.floats(count, -8, 8)
        x[0] = 0
        if count > 2 {
            x[1] = 30
            x[2] = -30
        }
        let dy = random.floats(count)
        var y = [Float](repeating: .nan, count: count), dx = y
        activation.forward(&y, x, Int64(count))
        activation.backward(&dx, dy, activation.backwardReadsOutput ? y : x, Int64(count))
        for i in 0..<count {
            let expectedY = activation.f(Double(x[i]))
            let expectedDx = Double(dy[i]) * activation.derivative(Double(x[i]))
            #expect(abs(Double(y[i]) - expectedY) <= 2e-6 * max(1, abs(expectedY)), "\(activation) y at x=\(x[i])")
            #expect(abs(Double(dx[i]) - expectedDx) <= 2e-6 * max(1, abs(expectedDx)), "\(activation) dx at x=\(x[i])")
        }
    }

    @Test("dropout keeps about 1 - p of the elements, scales them, and its backward uses the same mask")
    func dropout() {
        let count = 100_000, p: Float = 0.3
        let x = [Float](repeating: 2, count: count), dy = [Float](repeating: 5, count: count)
        var y = [Float](repeating: .nan, count: count), dx = y
        bp_dropout_forward(&y, x, p, 42, Int64(count))
        bp_dropout_backward(&dx, dy, p, 42, Int64(count))
        let scale = 1 / (1 - p)
        let kept = y.filter { $0 != 0 }.count
        #expect(abs(Double(kept) / Double(count) - 0.7) < 0.01)
        for i in 0..<count {
            #expect(y[i] == 0 || y[i] == 2 * scale)
            #expect((dx[i] == 0) == (y[i] == 0))
        }
        var other = y
        bp_dropout_forward(&other, x, p, 43, Int64(count))
        #expect(other != y, "another seed draws another mask")
    }

    @Test("add and add-in-place")
    func add() {
        var random = TestRandom(seed: 3)
        let a = random.floats(50_000), b = random.floats(50_000)
        var sum = [Float](repeating: 0, count: a.count)
        bp_add(&sum, a, b, Int64(a.count))
        var accumulated = a
        bp_add_inplace(&accumulated, b, Int64(a.count))
        #expect(sum == zip(a, b).map(+))
        #expect(accumulated == sum)
    }
}
