import Backprop
import BackpropTestSupport
import Foundation
import Testing

@Suite struct TrainingTests {
    /// The worked two-layer example of the backpropagation literature:
    /// h = ReLU(w1 x + b1), y = σ(w2 h + b2), L = (y − t)² with x = 2, t = 1,
    /// w1 = 0.5, b1 = 0.1, w2 = 0.3, b2 = −0.2.
    /// Forward: h = 1.1, z = 0.3 · 1.1 − 0.2 = 0.13, y = σ(0.13) ≈ 0.532454.
    /// Backward: ∂L/∂y = 2(y − 1) ≈ −0.935092; ∂L/∂z = ∂L/∂y · y(1 − y) ≈ −0.232786 = ∂L/∂b2;
    /// ∂L/∂w2 = ∂L/∂z · h ≈ −0.256065; ∂L/∂h = ∂L/∂z · w2 ≈ −0.069836 = ∂L/∂b1 (h > 0);
    /// ∂L/∂w1 = ∂L/∂b1 · x ≈ −0.139672. One SGD step with η = 0.01 subtracts η times each.
    @Test func workedTwoLayerExample() throws {
        let first = try Linear(1, 1), second = try Linear(1, 1)
        try first.weight.load(Tensor(shape: [1, 1], scalars: [0.5]), name: "w1")
        try first.bias!.load(Tensor([0.1]), name: "b1")
        try second.weight.load(Tensor(shape: [1, 1], scalars: [0.3]), name: "w2")
        try second.bias!.load(Tensor([-0.2]), name: "b2")
        let model = Sequential(first, ReLU(), second, Sigmoid())

        let (y, backward) = try model.forward(Tensor(shape: [1, 1], scalars: [2]))
        let y0 = 1 / (1 + exp(-0.13))
        #expect(abs(Double(y[0]) - y0) < 1e-6)
        let loss = try MeanSquaredError()(y, target: Tensor(shape: [1, 1], scalars: [1]))
        #expect(abs(Double(loss.value) - (y0 - 1) * (y0 - 1)) < 1e-6)
        _ = try backward(loss.gradient)

        let dz = 2 * (y0 - 1) * y0 * (1 - y0)
        let expected: [(Parameter, Double, Double)] = [
            (second.weight, dz * 1.1, -0.2561), (second.bias!, dz, -0.2328),
            (first.weight, dz * 0.3 * 2, -0.1397), (first.bias!, dz * 0.3, -0.0698),
        ]
        for (parameter, exact, rounded) in expected {
            #expect(abs(Double(parameter.grad[0]) - exact) < 1e-6)
            #expect(abs(Double(parameter.grad[0]) - rounded) < 5e-5, "the literature's 4-digit value")
        }

        let before = expected.map { Double($0.0.value[0]) }
        try SGD(parameters: expected.map(\.0), learningRate: 0.01).step()
        for ((parameter, exact, _), old) in zip(expected, before) {
            #expect(abs(Double(parameter.value[0]) - (old - 0.01 * exact)) < 1e-7)
        }
        // w2: 0.3 → 0.302561, b2: −0.2 → −0.197672, w1: 0.5 → 0.501397, b1: 0.1 → 0.100698.
        #expect(abs(second.weight.value[0] - 0.302561) < 1e-6 && abs(second.bias!.value[0] - -0.197672) < 1e-6)
        #expect(abs(first.weight.value[0] - 0.501397) < 1e-6 && abs(first.bias!.value[0] - 0.100698) < 1e-6)
    }

    @Test func sgdValidatesItsSettings() throws {
        let parameters = try Linear(2, 2).parameters
        expectError(.invalidArgument, mentioning: ["SGD(lr: -1.0", "learning rate"]) {
            _ = try SGD(parameters: parameters, learningRate: -1)
        }
        expectError(.invalidArgument, mentioning: ["Nesterov"]) {
            _ = try SGD(parameters: parameters, learningRate: 0.1, nesterov: true)
        }
    }

    /// torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01) on θ = 1 with constant gradient 1:
    /// step 1: d = 1.01, b = 1.01, θ = 0.899; step 2: d = 1 + 0.00899 = 1.00899,
    /// b = 0.909 + 1.00899 = 1.91799, θ = 0.899 − 0.191799 = 0.707201.
    @Test func sgdMomentumByHand() throws {
        let parameter = Parameter(Tensor([1]))
        let sgd = try SGD(parameters: [parameter], learningRate: 0.1, momentum: 0.9, weightDecay: 0.01)
        for _ in 0..<2 {
            parameter.grad = Tensor([1])
            sgd.step()
        }
        #expect(abs(parameter.value[0] - 0.707201) < 1e-6)
    }
}
