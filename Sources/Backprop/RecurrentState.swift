/// The state a recurrent layer carries from one step to the next, for every layer and direction:
/// h [layers · directions, N, H], and for an LSTM also the cell c of the same shape, ordered as
/// PyTorch orders them (layer 0 forward, layer 0 reverse, layer 1 forward, …).
///
/// Truncated backpropagation through time: pass the final state of one call as the initial state
/// of the next. The state is a plain value, so no gradient flows back into the earlier call; the
/// backward of the later call returns ∂J/∂(its initial state), which the caller may ignore.
public struct RecurrentState: Sendable, Equatable {
    public var h: Tensor
    public var c: Tensor?

    public init(h: Tensor, c: Tensor? = nil) {
        self.h = h
        self.c = c
    }
}

/// The backward of a recurrent forward: from ∂J/∂output and ∂J/∂(final state) (nil: zeros), it adds
/// every parameter's gradient and returns ∂J/∂input and ∂J/∂(initial state).
public typealias RecurrentBackward = (_ gradOutput: Tensor, _ gradFinalState: RecurrentState?) throws -> (
    input: Tensor, initialState: RecurrentState
)
