import CKernels

/// An optimizer: updates its parameters from their accumulated gradients.
public protocol Optimizer: AnyObject {
    var parameters: [Parameter] { get }
    /// The step size; schedules set it between steps.
    var learningRate: Float { get set }
    /// One update from the current gradients.
    func step()
    /// What the next step depends on beyond the parameters (moment estimates as "exp_avg.<index>",
    /// the step count as "step"), for checkpoints of a training run.
    var state: [String: StoredArray] { get }
    /// Restores a `state` saved from an optimizer of the same kind over the same parameters;
    /// throws, changing nothing, when names or shapes do not fit.
    func loadState(_ state: [String: StoredArray]) throws
}

/// A zero tensor of each parameter's shape: optimizer state.
func zerosLike(_ parameters: [Parameter]) -> [Tensor] {
    parameters.map { Tensor(unchecked: $0.value.shape, scalars: [Float](repeating: 0, count: $0.value.count)) }
}

/// Checks settings every optimizer shares; `name` describes the optimizer in errors.
func validateOptimizer(_ name: String, learningRate: Float, nonNegative: [(String, Float)]) throws {
    guard learningRate.isFinite, learningRate >= 0 else {
        throw BackpropError(.invalidArgument, "\(name): learning rate must be finite and >= 0")
    }
    if let (label, _) = nonNegative.first(where: { !$0.1.isFinite || $0.1 < 0 }) {
        throw BackpropError(.invalidArgument, "\(name): \(label) must be finite and >= 0")
    }
}

/// Optimizer state as named arrays: each tensor list as "<name>.<parameter index>", the step
/// count as "step".
func optimizerState(step: Int64, _ lists: [(String, [Tensor])]) -> [String: StoredArray] {
    var state = ["step": StoredArray(shape: [], elements: .int64([step]))]
    for (name, tensors) in lists {
        for (index, tensor) in tensors.enumerated() { state["\(name).\(index)"] = StoredArray(tensor) }
    }
    return state
}

/// Reads back what `optimizerState` wrote for tensor lists shaped like `lists`; throws when a name
/// is missing or left over or a shape differs. `optimizer` names the optimizer in errors.
/// The largest count (of steps, of batches) a file may hold: every count up to it is exact in a
/// double, and counting on from it cannot overflow.
let maxCount: Int64 = 1 << 53

func restoreOptimizerState(
    _ state: [String: StoredArray], _ lists: [(String, [Tensor])],
    optimizer: String
) throws -> (step: Int64, lists: [[Tensor]]) {
    func fail(_ problem: String) -> BackpropError {
        BackpropError(.shapeMismatch, "\(optimizer): saved state does not fit: \(problem)")
    }
    guard case .int64(let steps)? = state["step"]?.elements, steps.count == 1 else { throw fail("no int64 'step'") }
    guard (0...maxCount).contains(steps[0]) else { throw fail("step \(steps[0]) is not a count from 0 to 2^53") }
    var expected: Set<String> = ["step"]
    let restored = try lists.map { name, tensors in
        try tensors.enumerated().map { index, tensor in
            let key = "\(name).\(index)"
            expected.insert(key)
            guard let array = state[key], array.shape == tensor.shape, case .float32 = array.elements else {
                throw fail("\(key) is missing or not float32 of shape \(describe(tensor.shape))")
            }
            return array.tensor
        }
    }
    if let extra = state.keys.filter({ !expected.contains($0) }).sorted().first { throw fail("unexpected \(extra)") }
    return (steps[0], restored)
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
    private var steps: Int64 = 0

    public init(
        parameters: [Parameter], learningRate: Float, momentum: Float = 0, weightDecay: Float = 0,
        nesterov: Bool = false
    ) throws {
        let settings = "SGD(lr: \(learningRate), momentum: \(momentum), weightDecay: \(weightDecay))"
        try validateOptimizer(
            settings, learningRate: learningRate,
            nonNegative: [("momentum", momentum), ("weight decay", weightDecay)])
        guard !nesterov || momentum > 0 else {
            throw BackpropError(.invalidArgument, "\(settings): Nesterov momentum needs momentum > 0")
        }
        self.parameters = parameters
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        momentumBuffers = momentum > 0 ? zerosLike(parameters) : []
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
                            bp_sgd_step(
                                p, buffer, g, n, learningRate, momentum, weightDecay,
                                nesterov ? 1 : 0, steps == 0 ? 1 : 0)
                        }
                    }
                }
            }
        }
        steps += 1
    }

    public var state: [String: StoredArray] {
        optimizerState(step: steps, [("momentum_buffer", momentumBuffers)])
    }

    public func loadState(_ state: [String: StoredArray]) throws {
        let restored = try restoreOptimizerState(state, [("momentum_buffer", momentumBuffers)], optimizer: "SGD")
        (steps, momentumBuffers) = (restored.step, restored.lists[0])
    }
}
