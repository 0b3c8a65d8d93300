import CKernels

/// A multi-layer recurrent network over sequences, as PyTorch's `nn.RNN`, `nn.LSTM` and `nn.GRU`:
/// x [N, T, F] (batch-first) or [T, N, F] → the last layer's states at every step, [N, T, H · D] or
/// [T, N, H · D] (D = 2 when bidirectional: the forward direction's H then the reverse one's),
/// and the final state of every layer and direction. Layer l > 0 takes layer l − 1's output, through
/// dropout in training mode. The cells are those of `bp_rnn_params`; weights and biases are laid
/// out and named as PyTorch's (`weight_ih_l0`, `bias_hh_l1_reverse`), initialised uniform in
/// [−1/√H, 1/√H]. The backward runs the steps in reverse (backpropagation through time).
///
/// Memory: the forward saves each layer's input and output and, per step and batch row, the LSTM's
/// 4 gates, cell and the cell's tanh (6H' floats, H' being H rounded up to a multiple of 16) or the
/// GRU's 3 gates and W_hn h + b_hn (4H' floats); the Elman RNN saves no more than its output.
public class RecurrentLayer: Module {
    public let inputSize: Int
    public let hiddenSize: Int
    public let layers: Int
    public let bidirectional: Bool
    public let batchFirst: Bool
    /// The probability of zeroing each input of layers 1 and up in training mode.
    public let dropout: Float
    public var isTraining = true
    /// The generator of the dropout between layers.
    public let randomState: RandomState
    let kind: bp_rnn_kind
    private let name: String
    /// [layer · directions + direction]: W_ih, W_hh, b_ih, b_hh.
    private let weights: [(ih: Parameter, hh: Parameter, biasIH: Parameter?, biasHH: Parameter?)]

    init(
        _ name: String, kind: bp_rnn_kind, inputSize: Int, hiddenSize: Int, layers: Int, bias: Bool, batchFirst: Bool,
        bidirectional: Bool, dropout: Float, seed: UInt64
    ) throws {
        (self.name, self.kind, self.inputSize, self.hiddenSize, self.layers) = (
            name, kind, inputSize, hiddenSize, layers
        )
        (self.bidirectional, self.batchFirst, self.dropout) = (bidirectional, batchFirst, dropout)
        let label = "\(name)(input: \(inputSize), hidden: \(hiddenSize))"
        guard inputSize > 0, hiddenSize > 0, layers > 0 else {
            throw BackpropError(
                .invalidArgument, "\(label): sizes and the layer count must be positive (layers: \(layers))")
        }
        guard dropout >= 0, dropout < 1 else {
            throw BackpropError(.invalidArgument, "\(label): dropout must be in [0, 1), got \(dropout)")
        }
        var generator = SplitMix64(seed: seed)
        let gates = Int(bp_rnn_gates(Int32(kind.rawValue))), bound = 1 / Float(hiddenSize).squareRoot()
        func uniform(_ shape: [Int]) throws -> Parameter {
            Parameter(try Tensor.uniform(shape: shape, low: -bound, high: bound, using: &generator))
        }
        var weights: [(Parameter, Parameter, Parameter?, Parameter?)] = []
        for layer in 0..<layers {
            let features = layer == 0 ? inputSize : hiddenSize * (bidirectional ? 2 : 1)
            for _ in 0..<(bidirectional ? 2 : 1) {
                weights.append(
                    (
                        try uniform([gates * hiddenSize, features]), try uniform([gates * hiddenSize, hiddenSize]),
                        bias ? try uniform([gates * hiddenSize]) : nil, bias ? try uniform([gates * hiddenSize]) : nil
                    ))
            }
        }
        self.weights = weights
        randomState = RandomState(seed: generator.next())
    }

    var directions: Int { bidirectional ? 2 : 1 }

    public var description: String {
        "\(name)(input: \(inputSize), hidden: \(hiddenSize)\(layers > 1 ? ", layers: \(layers)" : "")"
            + "\(bidirectional ? ", bidirectional" : "")\(dropout > 0 ? ", dropout: \(dropout)" : ""))"
    }

    public var ownParameters: [(name: String, parameter: Parameter)] {
        var named: [(name: String, parameter: Parameter)] = []
        for (index, w) in weights.enumerated() {
            let suffix = "_l\(index / directions)" + (index % directions == 1 ? "_reverse" : "")
            named.append(("weight_ih" + suffix, w.ih))
            named.append(("weight_hh" + suffix, w.hh))
            if let bias = w.biasIH { named.append(("bias_ih" + suffix, bias)) }
            if let bias = w.biasHH { named.append(("bias_hh" + suffix, bias)) }
        }
        return named
    }

    public var ownRandomStates: [(name: String, state: RandomState)] {
        dropout > 0 ? [("generator", randomState)] : []
    }

    /// As a plain module: a zero initial state, the output sequence; the final state is dropped.
    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        let (output, _, backward) = try forward(input, state: nil)
        return (output, { gradOutput in try backward(gradOutput, nil).input })
    }

    /// As a plain module for data that needs no gradient: the backward skips the first layer's ∂J/∂x.
    public func forwardWithoutInputGradient(_ input: Tensor) throws -> (output: Tensor, backward: ParameterBackward) {
        let (run, output, _) = try start(input, state: nil)
        return (
            output,
            { [self] gradOutput in
                try checkGradient(gradOutput, matches: output.shape, in: self)
                _ = try run.backward(batchFirst ? gradOutput : swapFirstAxes(gradOutput), nil, inputGradient: false)
            }
        )
    }

    /// The output sequence, the final state, and the backward through time. `state` is the initial
    /// state (nil: zeros).
    public func forward(
        _ input: Tensor, state: RecurrentState?
    ) throws -> (
        output: Tensor, state: RecurrentState, backward: RecurrentBackward
    ) {
        let (run, output, stateShape) = try start(input, state: state)
        return (
            output, run.finalState,
            { [self] gradOutput, gradState in
                try checkGradient(gradOutput, matches: output.shape, in: self)
                if let gradState { try check(gradState, shape: stateShape) }
                let (dx, dState) = try run.backward(batchFirst ? gradOutput : swapFirstAxes(gradOutput), gradState)
                return (batchFirst ? dx : swapFirstAxes(dx), dState)
            }
        )
    }

    /// The forward both kinds of call share: the input and state checked, the run from the state
    /// (zeros when nil), its output in the layer's axis order, and the state's shape.
    private func start(
        _ input: Tensor, state: RecurrentState?
    ) throws -> (
        run: RecurrentRun, output: Tensor, stateShape: [Int]
    ) {
        let x = try batchFirstInput(input)
        let stateShape = [layers * directions, x.shape[0], hiddenSize]
        try check(state, shape: stateShape)
        let h0 = state?.h ?? zeroState(stateShape)
        let c0 = kind == BP_LSTM ? state?.c ?? zeroState(stateShape) : nil
        let run = try RecurrentRun(self, x: x, h0: h0, c0: c0)
        return (run, batchFirst ? run.output : swapFirstAxes(run.output), stateShape)
    }

    /// The input as [N, T, F], or a thrown error when it is not a sequence of this layer's features.
    private func batchFirstInput(_ input: Tensor) throws -> Tensor {
        guard input.rank == 3, input.shape[2] == inputSize, input.shape[0] > 0, input.shape[1] > 0 else {
            let axes = batchFirst ? "[N, T, \(inputSize)]" : "[T, N, \(inputSize)]"
            throw BackpropError(.shapeMismatch, "\(self): input has shape \(describe(input.shape)), expected \(axes)")
        }
        return batchFirst ? input : swapFirstAxes(input)
    }

    /// A zero state of `shape`.
    private func zeroState(_ shape: [Int]) -> Tensor {
        Tensor(unchecked: shape, scalars: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    /// Throws unless `state` (when given) has h, and c exactly for an LSTM, of `shape`.
    private func check(_ state: RecurrentState?, shape: [Int]) throws {
        guard let state else { return }
        guard state.h.shape == shape, (state.c == nil) == (kind != BP_LSTM), state.c.map({ $0.shape == shape }) ?? true
        else {
            let expected = "h\(kind == BP_LSTM ? " and c" : "") of shape \(describe(shape))"
            throw BackpropError(
                .shapeMismatch,
                "\(self): state has h \(describe(state.h.shape))\(state.c.map { " and c \(describe($0.shape))" } ?? ""), expected \(expected)"
            )
        }
    }

    /// The weights of layer `layer`, direction `direction`.
    func weights(
        _ layer: Int, _ direction: Int
    ) -> (ih: Parameter, hh: Parameter, biasIH: Parameter?, biasHH: Parameter?) {
        weights[layer * directions + direction]
    }
}

/// [A, B, F] → [B, A, F].
func swapFirstAxes(_ x: Tensor) -> Tensor {
    let (a, b, f) = (x.shape[0], x.shape[1], x.shape[2])
    let out = x.withPointer { source in
        uninitializedArray(x.count) { out in
            for i in 0..<a {
                for j in 0..<b { (out + (j * a + i) * f).update(from: source + (i * b + j) * f, count: f) }
            }
        }
    }
    return Tensor(unchecked: [b, a, f], scalars: out)
}

/// An Elman RNN with tanh or ReLU, as PyTorch's `nn.RNN`.
public final class RNN: RecurrentLayer {
    public enum Nonlinearity: String, Sendable { case tanh, relu }

    public init(
        inputSize: Int, hiddenSize: Int, layers: Int = 1, nonlinearity: Nonlinearity = .tanh, bias: Bool = true,
        batchFirst: Bool = false, bidirectional: Bool = false, dropout: Float = 0, seed: UInt64 = 0
    ) throws {
        try super.init(
            "RNN", kind: nonlinearity == .tanh ? BP_RNN_TANH : BP_RNN_RELU, inputSize: inputSize,
            hiddenSize: hiddenSize,
            layers: layers, bias: bias, batchFirst: batchFirst, bidirectional: bidirectional, dropout: dropout,
            seed: seed)
    }
}

/// A long short-term memory network, as PyTorch's `nn.LSTM` (gates i, f, g, o).
public final class LSTM: RecurrentLayer {
    public init(
        inputSize: Int, hiddenSize: Int, layers: Int = 1, bias: Bool = true, batchFirst: Bool = false,
        bidirectional: Bool = false, dropout: Float = 0, seed: UInt64 = 0
    ) throws {
        try super.init(
            "LSTM", kind: BP_LSTM, inputSize: inputSize, hiddenSize: hiddenSize, layers: layers, bias: bias,
            batchFirst: batchFirst, bidirectional: bidirectional, dropout: dropout, seed: seed)
    }
}

/// A gated recurrent unit network, as PyTorch's `nn.GRU` (gates r, z, n; the reset gate applied
/// after the hidden product).
public final class GRU: RecurrentLayer {
    public init(
        inputSize: Int, hiddenSize: Int, layers: Int = 1, bias: Bool = true, batchFirst: Bool = false,
        bidirectional: Bool = false, dropout: Float = 0, seed: UInt64 = 0
    ) throws {
        try super.init(
            "GRU", kind: BP_GRU, inputSize: inputSize, hiddenSize: hiddenSize, layers: layers, bias: bias,
            batchFirst: batchFirst, bidirectional: bidirectional, dropout: dropout, seed: seed)
    }
}
