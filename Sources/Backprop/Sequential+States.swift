/// Truncated backpropagation through time over a whole `Sequential`, as a PyTorch language model
/// written `y, state = lstm(emb(x), state)` would run it.
extension Sequential {
    /// The layers that carry a state from one call to the next, in order.
    public var recurrentLayers: [RecurrentLayer] { layers.compactMap { $0 as? RecurrentLayer } }

    /// Runs the layers with each recurrent layer starting from its entry of `states` (one per
    /// `recurrentLayers` entry; nil or an empty array: zeros) and returns their final states, to
    /// pass to the next call. No gradient flows into the states: the backward stops at this call's
    /// first step. The backward takes ∂J/∂output, adds every parameter's gradient and returns
    /// ∂J/∂(each layer's input), layer by layer (entry i: layer i's input; entry 0 is what the
    /// first layer gives, zeros for an embedding's indices).
    public func forward(
        _ input: Tensor, states: [RecurrentState?]
    ) throws -> (output: Tensor, states: [RecurrentState], backward: (Tensor) throws -> [Tensor]) {
        let recurrent = recurrentLayers.count
        guard states.isEmpty || states.count == recurrent else {
            throw BackpropError(
                .invalidArgument,
                "Sequential: \(states.count) states for \(recurrent) recurrent layers, expected one per layer")
        }
        var output = input, finals: [RecurrentState] = [], backwards: [Backward] = []
        for layer in layers {
            if let layer = layer as? RecurrentLayer {
                let (y, final, backward) = try layer.forward(output, state: states.isEmpty ? nil : states[finals.count])
                (output, finals) = (y, finals + [final])
                backwards.append { try backward($0, nil).input }
            } else {
                let step = try layer.forward(output)
                output = step.output
                backwards.append(step.backward)
            }
        }
        return (
            output, finals,
            { gradOutput in
                var gradients = [gradOutput]
                for backward in backwards.reversed() { gradients.append(try backward(gradients.last!)) }
                return Array(gradients.reversed().dropLast())
            }
        )
    }
}
