import Backprop
import BackpropTestSupport
import Foundation
import Testing

@Suite struct OptimizerTests {
    /// Three steps on a 3-element parameter with fixed gradients, against the torch.optim update rules
    /// written out in double.
    static let gradients: [[Float]] = [[0.5, -1, 2], [0.1, 0.3, -0.7], [-0.2, 0.4, 1.5]]
    static let start: [Float] = [1, -2, 0.5]

    static func run(_ make: ([Parameter]) throws -> Optimizer) throws -> [Float] {
        let parameter = Parameter(Tensor(start))
        let optimizer = try make([parameter])
        for g in gradients {
            parameter.grad = Tensor(g)
            optimizer.step()
        }
        return parameter.value.scalars
    }

    static func expectClose(_ a: [Float], _ b: [Double], sourceLocation: SourceLocation = #_sourceLocation) {
        for (x, y) in zip(a, b) {
            #expect(abs(Double(x) - y) <= 1e-5 * max(1, abs(y)), "\(a) vs \(b)", sourceLocation: sourceLocation)
        }
    }

    @Test("Adam and AdamW follow torch.optim", arguments: [false, true])
    func adam(decoupled: Bool) throws {
        let (lr, b1, b2, eps, wd) = (0.01, 0.9, 0.999, 1e-8, 0.1)
        let result = try Self.run {
            decoupled
                ? try AdamW(parameters: $0, learningRate: Float(lr), weightDecay: Float(wd))
                : try Adam(parameters: $0, learningRate: Float(lr), weightDecay: Float(wd))
        }
        var p = Self.start.map(Double.init), m = [0.0, 0, 0], v = [0.0, 0, 0]
        for (t, g) in Self.gradients.enumerated() {
            for i in 0..<3 {
                var grad = Double(g[i])
                if decoupled { p[i] *= 1 - lr * wd } else { grad += wd * p[i] }
                m[i] = b1 * m[i] + (1 - b1) * grad
                v[i] = b2 * v[i] + (1 - b2) * grad * grad
                let step = Double(t + 1)
                p[i] -= lr / (1 - pow(b1, step)) * m[i] / (v[i].squareRoot() / (1 - pow(b2, step)).squareRoot() + eps)
            }
        }
        Self.expectClose(result, p)
    }

    @Test("RMSprop follows torch.optim", arguments: [Float(0), 0.9])
    func rmsprop(momentum: Float) throws {
        let (lr, alpha, eps, wd) = (0.01, 0.99, 1e-8, 0.05)
        let result = try Self.run {
            try RMSprop(parameters: $0, learningRate: Float(lr), weightDecay: Float(wd), momentum: momentum)
        }
        var p = Self.start.map(Double.init), s = [0.0, 0, 0], b = [0.0, 0, 0]
        for g in Self.gradients {
            for i in 0..<3 {
                let grad = Double(g[i]) + wd * p[i]
                s[i] = alpha * s[i] + (1 - alpha) * grad * grad
                var step = grad / (s[i].squareRoot() + eps)
                if momentum != 0 {
                    b[i] = Double(momentum) * b[i] + step
                    step = b[i]
                }
                p[i] -= lr * step
            }
        }
        Self.expectClose(result, p)
    }

    /// Gradients (3, 4) and (0, 12): global norm 13; clipped to 6.5 they halve.
    @Test func clipping() throws {
        let a = Parameter(Tensor([0, 0])), b = Parameter(Tensor([0, 0]))
        a.grad = Tensor([3, 4])
        b.grad = Tensor([0, 12])
        let norm = try GradientClipping.clipByNorm([a, b], maxNorm: 6.5)
        #expect(abs(norm - 13) < 1e-5)
        #expect(abs(a.grad[0] - 1.5) < 1e-5 && abs(b.grad[1] - 6) < 1e-5)
        // Below the limit nothing changes.
        #expect(abs(try GradientClipping.clipByNorm([a], maxNorm: 100) - 2.5) < 1e-5)
        #expect(abs(a.grad[1] - 2) < 1e-5)
        try GradientClipping.clipByValue([b], clip: 1)
        #expect(b.grad.scalars == [0, 1])
        expectError(.invalidArgument, mentioning: ["maxNorm"]) { try GradientClipping.clipByNorm([a], maxNorm: 0) }
    }

    @Test func schedules() throws {
        let step = try StepSchedule(base: 0.1, stepSize: 2, gamma: 0.5)
        #expect((0..<5).map(step.learningRate) == [0.1, 0.1, 0.05, 0.05, 0.025])
        // Warm-up 1 epoch (0.05), then cosine from 0.1 at epoch 1 to 0 at epoch 5, 0.05 half-way.
        let cosine = try CosineSchedule(base: 0.1, total: 5, warmup: 1)
        #expect(abs(cosine.learningRate(at: 0) - 0.05) < 1e-7)
        #expect(abs(cosine.learningRate(at: 1) - 0.1) < 1e-7)
        #expect(abs(cosine.learningRate(at: 3) - 0.05) < 1e-7)
        #expect(abs(cosine.learningRate(at: 5)) < 1e-7)
        expectError(.invalidArgument, mentioning: ["stepSize"]) { _ = try StepSchedule(base: 0.1, stepSize: 0) }
        expectError(.invalidArgument, mentioning: ["Adam", "betas"]) { _ = try Adam(parameters: [], betas: (1, 0.9)) }
    }
}
