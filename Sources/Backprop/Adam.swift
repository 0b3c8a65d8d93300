import CKernels

/// Adam, as `torch.optim.Adam` (weight decay added to the gradient), or with `decoupledWeightDecay`
/// as `torch.optim.AdamW` (θ ← θ (1 − η λ) before the step). At step t:
/// m = β1 m + (1 − β1) g, v = β2 v + (1 − β2) g², θ ← θ − η / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε).
/// Each update is one C pass per parameter.
public class Adam: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let betas: (Float, Float)
    public let eps: Float
    public let weightDecay: Float
    public let decoupledWeightDecay: Bool
    private var m: [Tensor], v: [Tensor]
    private var steps: Int64 = 0

    public init(
        parameters: [Parameter], learningRate: Float = 1e-3, betas: (Float, Float) = (0.9, 0.999),
        eps: Float = 1e-8, weightDecay: Float = 0, decoupledWeightDecay: Bool = false
    ) throws {
        let name =
            "\(decoupledWeightDecay ? "AdamW" : "Adam")(lr: \(learningRate), betas: \(betas), eps: \(eps), weightDecay: \(weightDecay))"
        try validateOptimizer(
            name, learningRate: learningRate, nonNegative: [("eps", eps), ("weight decay", weightDecay)])
        guard (0..<1).contains(betas.0), (0..<1).contains(betas.1) else {
            throw BackpropError(.invalidArgument, "\(name): betas must be in [0, 1)")
        }
        self.parameters = parameters
        self.learningRate = learningRate
        self.betas = betas
        self.eps = eps
        self.weightDecay = weightDecay
        self.decoupledWeightDecay = decoupledWeightDecay
        m = zerosLike(parameters)
        v = zerosLike(parameters)
    }

    public func step() {
        steps += 1
        for index in parameters.indices {
            let parameter = parameters[index], n = Int64(parameter.value.count)
            parameter.grad.withPointer { g in
                parameter.value.withMutablePointer { p in
                    m[index].withMutablePointer { mp in
                        v[index].withMutablePointer { vp in
                            bp_adam_step(
                                p, mp, vp, g, n, learningRate, betas.0, betas.1, eps, weightDecay,
                                decoupledWeightDecay ? 1 : 0, steps)
                        }
                    }
                }
            }
        }
    }

    public var state: [String: StoredArray] {
        optimizerState(step: steps, [("exp_avg", m), ("exp_avg_sq", v)])
    }

    public func loadState(_ state: [String: StoredArray]) throws {
        let restored = try restoreOptimizerState(state, [("exp_avg", m), ("exp_avg_sq", v)], optimizer: "Adam")
        (steps, m, v) = (restored.step, restored.lists[0], restored.lists[1])
    }
}

/// AdamW, as `torch.optim.AdamW` (default weight decay 0.01, decoupled from the gradient).
public final class AdamW: Adam {
    public init(
        parameters: [Parameter], learningRate: Float = 1e-3, betas: (Float, Float) = (0.9, 0.999),
        eps: Float = 1e-8, weightDecay: Float = 0.01
    ) throws {
        try super.init(
            parameters: parameters, learningRate: learningRate, betas: betas, eps: eps,
            weightDecay: weightDecay, decoupledWeightDecay: true)
    }
}

/// RMSprop, as `torch.optim.RMSprop` (not centred): s = α s + (1 − α) g² with g = ∇ + λ θ;
/// θ ← θ − η g / (√s + ε), or with momentum μ, b = μ b + g / (√s + ε) and θ ← θ − η b.
public final class RMSprop: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let alpha: Float
    public let eps: Float
    public let weightDecay: Float
    public let momentum: Float
    private var squareAverages: [Tensor], momentumBuffers: [Tensor]
    private var steps: Int64 = 0

    public init(
        parameters: [Parameter], learningRate: Float = 1e-2, alpha: Float = 0.99, eps: Float = 1e-8,
        weightDecay: Float = 0, momentum: Float = 0
    ) throws {
        let name = "RMSprop(lr: \(learningRate), alpha: \(alpha), momentum: \(momentum))"
        try validateOptimizer(
            name, learningRate: learningRate,
            nonNegative: [("alpha", alpha), ("eps", eps), ("weight decay", weightDecay), ("momentum", momentum)])
        self.parameters = parameters
        self.learningRate = learningRate
        self.alpha = alpha
        self.eps = eps
        self.weightDecay = weightDecay
        self.momentum = momentum
        squareAverages = zerosLike(parameters)
        momentumBuffers = momentum > 0 ? zerosLike(parameters) : []
    }

    public func step() {
        steps += 1
        for index in parameters.indices {
            let parameter = parameters[index], n = Int64(parameter.value.count)
            parameter.grad.withPointer { g in
                parameter.value.withMutablePointer { p in
                    squareAverages[index].withMutablePointer { s in
                        if momentumBuffers.isEmpty {
                            bp_rmsprop_step(p, s, nil, g, n, learningRate, alpha, eps, weightDecay, 0)
                        } else {
                            momentumBuffers[index].withMutablePointer { b in
                                bp_rmsprop_step(p, s, b, g, n, learningRate, alpha, eps, weightDecay, momentum)
                            }
                        }
                    }
                }
            }
        }
    }

    public var state: [String: StoredArray] {
        optimizerState(step: steps, [("square_avg", squareAverages), ("momentum_buffer", momentumBuffers)])
    }

    public func loadState(_ state: [String: StoredArray]) throws {
        let restored = try restoreOptimizerState(
            state, [("square_avg", squareAverages), ("momentum_buffer", momentumBuffers)],
            optimizer: "RMSprop")
        (steps, squareAverages, momentumBuffers) = (restored.step, restored.lists[0], restored.lists[1])
    }
}
