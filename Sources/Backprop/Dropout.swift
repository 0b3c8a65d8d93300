import CKernels

/// Inverted dropout: in training mode each element is zeroed with probability p and the rest
/// scaled by 1/(1-p); in evaluation mode it is the identity. The backward multiplies by the same
/// mask, which the kernel recomputes from the call's seed instead of storing it.
///
/// Each forward call draws a fresh seed from the module's generator, so results are reproducible
/// from `seed` and independent of the thread count. The generator is its random state "generator",
/// which training checkpoints save, so a resumed run draws the same masks.
public final class Dropout: Module {
    public let probability: Float
    public var isTraining = true
    public let randomState: RandomState

    public init(probability: Float = 0.5, seed: UInt64 = 0) throws {
        guard probability >= 0, probability < 1 else {
            throw BackpropError(.invalidArgument, "Dropout(p: \(probability)): p must be in [0, 1)")
        }
        self.probability = probability
        randomState = RandomState(seed: seed)
    }

    public var description: String { "Dropout(p: \(probability))" }

    public var ownRandomStates: [(name: String, state: RandomState)] { [("generator", randomState)] }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        guard isTraining, probability > 0 else {
            return (
                input,
                { gradOutput in
                    try checkGradient(gradOutput, matches: input.shape, in: self)
                    return gradOutput
                }
            )
        }
        let seed = randomState.generator.next(), p = probability, n = Int64(input.count), shape = input.shape
        let output = input.withPointer { x in Tensor.filled(shape) { bp_dropout_forward($0, x, p, seed, n) } }
        return (
            output,
            { gradOutput in  // the mask is drawn again from the seed: nothing of the pass is kept
                try checkGradient(gradOutput, matches: shape, in: self)
                return gradOutput.withPointer { dy in
                    Tensor.filled(shape) { bp_dropout_backward($0, dy, p, seed, n) }
                }
            }
        )
    }
}
