import CKernels

/// An optimizer: updates its parameters from their accumulated gradients.
public protocol Optimizer: AnyObject {
    var parameters: [Parameter] { get }
    /// One update from the current gradients.
    func step()
}

extension Optimizer {
    /// Clears the gradients of the optimizer's parameters.
    public func zeroGrad() {
        for parameter in parameters { parameter.zeroGrad() }
    }
}

/// Stochastic gradient descent as `torch.optim.SGD` (dampening 0):
/// d = g + λθ; with momentum μ, b = μ b + d (b = d at the first step) and d = b, or d + μ b with
/// Nesterov; then θ ← θ − η d. The update runs in one C pass per parameter.
public final class SGD: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let momentum: Float
    public let weightDecay: Float
    public let nesterov: Bool
    private var momentumBuffers: [Tensor]
    private var steps = 0

    public init(parameters: [Parameter], learningRate: Float, momentum: Float = 0, weightDecay: Float = 0,
                nesterov: Bool = false) throws {
        let settings = "SGD(lr: \(learningRate), momentum: \(momentum), weightDecay: \(weightDecay))"
        guard learningRate.isFinite, learningRate >= 0 else {
            throw BackpropError(.invalidArgument, "\(settings): learning rate must be finite and >= 0")
        }
        guard momentum.isFinite, momentum >= 0, weightDecay.isFinite, weightDecay >= 0 else {
            throw BackpropError(.invalidArgument, "\(settings): momentum and weight decay must be finite and >= 0")
        }
        guard !nesterov || momentum > 0 else {
            throw BackpropError(.invalidArgument, "\(settings): Nesterov momentum needs momentum > 0")
        }
        self.parameters = parameters
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        momentumBuffers = momentum > 0 ? parameters.map { Tensor(unchecked: $0.value.shape, scalars: .init(repeating: 0, count: $0.value.count)) } : []
    }

    public func step() {
        for index in parameters.indices {
            let parameter = parameters[index], n = Int64(parameter.value.count)
            parameter.grad.withPointer { g in
                parameter.value.withMutablePointer { p in
                    if momentumBuffers.isEmpty {
                        bp_sgd_step(p, nil, g, n, learningRate, 0, weightDecay, 0, 0)
                    } else {
                        momentumBuffers[index].withMutablePointer { buffer in
                            bp_sgd_step(p, buffer, g, n, learningRate, momentum, weightDecay,
                                        nesterov ? 1 : 0, steps == 0 ? 1 : 0)
                        }
                    }
                }
            }
        }
        steps += 1
    }
}
