import Backprop
import BackpropTestSupport
import CKernels
import Foundation
import Testing

@Suite struct RecurrentTests {
    static func make(
        _ kind: String, input: Int = 3, hidden: Int = 4, layers: Int = 1, bias: Bool = true,
        bidirectional: Bool = false, seed: UInt64 = 1
    ) throws -> RecurrentLayer {
        switch kind {
        case "lstm":
            return try LSTM(
                inputSize: input, hiddenSize: hidden, layers: layers, bias: bias, batchFirst: true,
                bidirectional: bidirectional, seed: seed)
        case "gru":
            return try GRU(
                inputSize: input, hiddenSize: hidden, layers: layers, bias: bias, batchFirst: true,
                bidirectional: bidirectional, seed: seed)
        default:
            return try RNN(
                inputSize: input, hiddenSize: hidden, layers: layers, nonlinearity: kind == "relu" ? .relu : .tanh,
                bias: bias, batchFirst: true, bidirectional: bidirectional, seed: seed)
        }
    }

    /// Finite differences through 24 time steps, two layers, both directions.
    @Test(arguments: ["tanh", "relu", "lstm", "gru"])
    func gradientsThroughTime(kind: String) throws {
        let layer = try Self.make(kind, layers: 2, bidirectional: true)
        try expectGradientsCorrect(layer, input: randomTensor([2, 24, 3], seed: 2))
    }

    /// Finite differences where the hidden units span two blocks of 16 (the second partial) and the
    /// batch is not a multiple of 6.
    @Test(arguments: ["tanh", "lstm", "gru"])
    func gradientsAcrossUnitBlocks(kind: String) throws {
        let layer = try Self.make(kind, input: 5, hidden: 20, seed: 23)
        try expectGradientsCorrect(layer, input: randomTensor([7, 8, 5], seed: 24))
        // 17 blocks (8 pairs and one alone), every product deeper than one depth block of 256.
        let wide = try Self.make(kind, input: 300, hidden: 270, seed: 25)
        try expectGradientsCorrect(wide, input: randomTensor([2, 3, 300], seed: 26))
    }

    /// Saturated gates: large inputs and weights drive the sigmoids and tanhs to their flat ends,
    /// where the gradients are small but must still be right.
    @Test(arguments: ["lstm", "gru", "tanh"])
    func gradientsWithSaturatedGates(kind: String) throws {
        let layer = try Self.make(kind, input: 3, hidden: 3, seed: 5)
        for parameter in layer.parameters {
            parameter.value = try Tensor(shape: parameter.value.shape, scalars: parameter.value.scalars.map { 4 * $0 })
        }
        let report = try GradientCheck.run(layer, input: randomTensor([2, 20, 3], seed: 6, -3, 3), epsilon: 1e-3)
        #expect(report.passed, "\(report)")
    }

    /// ∂J/∂(initial state) against central differences of J = <y, v> + <h_n, w> (+ <c_n, u>).
    @Test(arguments: ["tanh", "lstm", "gru"])
    func initialStateGradient(kind: String) throws {
        let layer = try Self.make(kind, layers: 2)
        let x = randomTensor([2, 6, 3], seed: 7)
        let lstm = kind == "lstm"
        let state = RecurrentState(
            h: randomTensor([2, 2, 4], seed: 8), c: lstm ? randomTensor([2, 2, 4], seed: 9) : nil)
        let v = randomTensor([2, 6, 4], seed: 10)
        let gradFinal = RecurrentState(
            h: randomTensor([2, 2, 4], seed: 11), c: lstm ? randomTensor([2, 2, 4], seed: 12) : nil)
        func objective(_ s: RecurrentState) throws -> Double {
            let (y, final, _) = try layer.forward(x, state: s)
            var sum = zip(y.scalars, v.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            sum += zip(final.h.scalars, gradFinal.h.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            if let c = final.c, let w = gradFinal.c {
                sum += zip(c.scalars, w.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
            return sum
        }
        let (_, _, backward) = try layer.forward(x, state: state)
        let (_, gradInitial) = try backward(v, gradFinal)
        for (label, analytic, which) in [("h", gradInitial.h, 0)] + (lstm ? [("c", gradInitial.c!, 1)] : []) {
            for index in stride(from: 0, to: analytic.count, by: 3) {
                var plus = state, minus = state
                if which == 0 {
                    plus.h[index] += 1e-2
                    minus.h[index] -= 1e-2
                } else {
                    plus.c![index] += 1e-2
                    minus.c![index] -= 1e-2
                }
                let numeric = (try objective(plus) - objective(minus)) / 2e-2
                #expect(
                    abs(numeric - Double(analytic[index])) <= 1e-2 * max(abs(numeric), 1),
                    "\(kind) d\(label)0[\(index)]")
            }
        }
    }

    /// Truncated BPTT: two calls passing the state on give the bits of one call over both halves.
    @Test(arguments: ["lstm", "gru"])
    func passingTheStateOnContinuesTheSequence(kind: String) throws {
        let layer = try Self.make(kind, layers: 2)
        let x = randomTensor([2, 10, 3], seed: 13)
        let (whole, wholeState, _) = try layer.forward(x, state: nil)
        func steps(_ range: Range<Int>) -> Tensor {
            var out: [Float] = []
            for b in 0..<2 { for s in range { for f in 0..<3 { out.append(x[(b * 10 + s) * 3 + f]) } } }
            return try! Tensor(shape: [2, range.count, 3], scalars: out)
        }
        let (first, middle, _) = try layer.forward(steps(0..<4), state: nil)
        let (second, last, _) = try layer.forward(steps(4..<10), state: middle)
        #expect(last == wholeState)
        for b in 0..<2 {
            for s in 0..<10 {
                for j in 0..<4 {
                    let part = s < 4 ? first[(b * 4 + s) * 4 + j] : second[(b * 6 + s - 4) * 4 + j]
                    #expect(part.bitPattern == whole[(b * 10 + s) * 4 + j].bitPattern)
                }
            }
        }
    }

    /// A layer without biases computes what one with zero biases does, to the bit (the kernel adds
    /// zeros in their place), over a full and a partial block of 16 units, both directions.
    @Test(arguments: ["tanh", "relu", "lstm", "gru"])
    func withoutBiasesIsZeroBiases(kind: String) throws {
        let (plain, zeroed) = (
            try Self.make(kind, input: 5, hidden: 20, bias: false, bidirectional: true),
            try Self.make(kind, input: 5, hidden: 20, bidirectional: true)
        )
        let weights = Dictionary(uniqueKeysWithValues: plain.namedParameters.map { ($0.name, $0.parameter.value) })
        for (name, parameter) in zeroed.namedParameters {
            parameter.value =
                try weights[name]
                ?? Tensor(shape: parameter.value.shape, scalars: [Float](repeating: 0, count: parameter.value.count))
        }
        let x = randomTensor([3, 6, 5], seed: 27)
        let same = bits(try plain(x).scalars) == bits(try zeroed(x).scalars)
        #expect(same)
    }

    /// The kernel's forward without saving for a backward (inference) gives the bits of the one that
    /// saves, with and without biases.
    @Test(arguments: [BP_RNN_TANH, BP_LSTM, BP_GRU])
    func forwardWithoutSavingGivesTheSameBits(kind: bp_rnn_kind) throws {
        let (n, t, input, hidden) = (3, 4, 5, 20)
        let gates = Int(bp_rnn_gates(Int32(kind.rawValue)))
        var p = bp_rnn_params(
            n: Int64(n), t: Int64(t), input: Int64(input), hidden: Int64(hidden), y_stride: Int64(hidden), y_offset: 0,
            kind: Int32(kind.rawValue), reverse: 0, precision: Int32(BP_FP32))
        let x = randomTensor([n, t, input], seed: 28).scalars
        let wih = randomTensor([gates * hidden, input], seed: 29).scalars
        let whh = randomTensor([gates * hidden, hidden], seed: 30).scalars
        let (bih, bhh) = (
            randomTensor([gates * hidden], seed: 31).scalars, randomTensor([gates * hidden], seed: 32).scalars
        )
        for biased in [true, false] {
            var outputs: [[UInt32]] = []
            for saving in [true, false] {
                var y = [Float](repeating: 0, count: n * t * hidden)
                var saved = [Float](repeating: 0, count: n * t * Int(bp_rnn_saved_per_row(&p)))
                let missing = saved.withUnsafeMutableBufferPointer { cells in
                    bp_rnn_forward(
                        &y, nil, nil, saving ? cells.baseAddress : nil, x, nil, nil, wih, whh, biased ? bih : nil,
                        biased ? bhh : nil, &p)
                }
                #expect(missing == 0)
                outputs.append(bits(y))
            }
            let same = outputs[0] == outputs[1]
            #expect(same, "biases: \(biased)")
        }
    }

    /// Time-first input is the batch-first computation on the transposed tensor.
    @Test func timeFirstMatchesBatchFirst() throws {
        let batchFirst = try LSTM(inputSize: 3, hiddenSize: 4, batchFirst: true, seed: 3)
        let timeFirst = try LSTM(inputSize: 3, hiddenSize: 4, batchFirst: false, seed: 3)
        let x = randomTensor([2, 5, 3], seed: 14)
        var transposed = [Float](repeating: 0, count: x.count)
        for b in 0..<2 {
            for s in 0..<5 { for f in 0..<3 { transposed[(s * 2 + b) * 3 + f] = x[(b * 5 + s) * 3 + f] } }
        }
        let y = try batchFirst(x), u = try timeFirst(Tensor(shape: [5, 2, 3], scalars: transposed))
        for b in 0..<2 {
            for s in 0..<5 { for j in 0..<4 { #expect(y[(b * 5 + s) * 4 + j] == u[(s * 2 + b) * 4 + j]) } }
        }
    }

    @Test func namesAreTorchs() throws {
        let lstm = try LSTM(inputSize: 3, hiddenSize: 4, layers: 2, bidirectional: true)
        #expect(
            lstm.namedParameters.map(\.name).prefix(8) == [
                "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse",
            ])
        #expect(lstm.namedParameters[8].parameter.value.shape == [16, 8], "layer 1 reads both directions")
        #expect(
            try GRU(inputSize: 3, hiddenSize: 4, bias: false).namedParameters.map(\.name) == [
                "weight_ih_l0", "weight_hh_l0",
            ])
    }

    /// Dropout between layers acts in training mode only, and the backward uses the same mask.
    @Test func dropoutBetweenLayers() throws {
        let layer = try LSTM(inputSize: 3, hiddenSize: 4, layers: 2, batchFirst: true, dropout: 0.5, seed: 4)
        let x = randomTensor([2, 5, 3], seed: 15)
        let eval = try layer.evaluating { try layer(x) }
        #expect(try layer(x) != eval)
        #expect(try layer.evaluating { try layer(x) } == eval)
        #expect(layer.namedRandomStates.map(\.name) == ["generator"])
    }

    /// Sizes that span several blocks of 16 hidden units, the last one partial, and batches that are
    /// not a multiple of the product's 6 rows: 13 rows (two chunks of 8, the last short) and 44 (six
    /// chunks, each thread's rows in runs of 16 and a shorter one). On 1 thread the steps take the
    /// rows in runs; on 2 and 3 threads the threads share them by rows or by unit blocks
    /// (split_rows: each way at least once with either kernel).
    @Test(arguments: ["tanh", "relu", "lstm", "gru"], [13, 44])
    func bitsDoNotDependOnTheThreadCount(kind: String, batch: Int) throws {
        let x = randomTensor([batch, 6, 40], seed: 16)
        try expectBitIdentical {
            let layer = try Self.make(kind, input: 40, hidden: 200, bidirectional: true, seed: 5)
            let (y, _, backward) = try layer.forward(x, state: nil)
            let (dx, _) = try backward(randomTensor(y.shape, seed: 17), nil)
            return [bits(y.scalars), bits(dx.scalars)] + layer.parameters.map { bits($0.grad.scalars) }
        }
    }

    /// The forward, both directions, against PyTorch's equations in plain loops (in Double), at sizes
    /// whose blocks of 16 hidden units and rows of 6 do not come out even (7 rows: 4 + 3), at sizes deeper than one
    /// depth block of the products (256) with 17 blocks (8 pairs and one alone), and with W_ih
    /// large enough that the input products are computed ahead of the steps: on 1 thread, which
    /// takes the rows through the steps, 8 steps at a time (19 steps: two whole chunks and a short
    /// one, forward and reversed); on 2, which share one chunk of rows by unit blocks, all at once.
    @Test(arguments: ["tanh", "relu", "lstm", "gru"], [(7, 5, 9, 37), (2, 3, 300, 270), (3, 19, 700, 40)])
    func forwardMatchesPlainLoops(kind: String, sizes: (Int, Int, Int, Int)) throws {
        let (n, t, input, hidden) = sizes
        let layer = try Self.make(kind, input: input, hidden: hidden, bidirectional: true, seed: 21)
        let x = randomTensor([n, t, input], seed: 22)
        let w = Dictionary(uniqueKeysWithValues: layer.namedParameters.map { ($0.name, $0.parameter.value.scalars) })
        let gates = kind == "lstm" ? 4 : kind == "gru" ? 3 : 1
        func sigmoid(_ v: Double) -> Double { 1 / (1 + exp(-v)) }
        // y [n, t, 2, H] and the final states [2, n, H]
        var expected = [Double](repeating: 0, count: n * t * 2 * hidden)
        var expectedFinal = [Double](repeating: 0, count: 2 * n * hidden)
        for (direction, suffix) in ["", "_reverse"].enumerated() {
            let (wih, whh) = (w["weight_ih_l0" + suffix]!, w["weight_hh_l0" + suffix]!)
            let (bih, bhh) = (w["bias_ih_l0" + suffix]!, w["bias_hh_l0" + suffix]!)
            for b in 0..<n {
                var h = [Double](repeating: 0, count: hidden), c = h
                for s in direction == 0 ? Array(0..<t) : Array((0..<t).reversed()) {
                    // pre[g · H + j] without (xp) and with (hp) the state's part
                    var xp = [Double](repeating: 0, count: gates * hidden), hp = xp
                    for r in 0..<gates * hidden {
                        xp[r] =
                            Double(bih[r])
                            + (0..<input).reduce(0.0) {
                                $0 + Double(wih[r * input + $1]) * Double(x.scalars[(b * t + s) * input + $1])
                            }
                        hp[r] = Double(bhh[r]) + (0..<hidden).reduce(0.0) { $0 + Double(whh[r * hidden + $1]) * h[$1] }
                    }
                    for j in 0..<hidden {
                        let (a, H) = ({ (g: Int) in xp[g * hidden + j] + hp[g * hidden + j] }, hidden)
                        switch kind {
                        case "lstm":
                            c[j] = sigmoid(a(1)) * c[j] + sigmoid(a(0)) * tanh(a(2))
                            h[j] = sigmoid(a(3)) * tanh(c[j])
                        case "gru":
                            let (r, z) = (sigmoid(a(0)), sigmoid(a(1)))
                            let nGate = tanh(xp[2 * H + j] + r * hp[2 * H + j])
                            h[j] = (1 - z) * nGate + z * h[j]
                        case "relu": h[j] = max(a(0), 0)
                        default: h[j] = tanh(a(0))
                        }
                    }
                    for j in 0..<hidden { expected[((b * t + s) * 2 + direction) * hidden + j] = h[j] }
                }
                for j in 0..<hidden { expectedFinal[(direction * n + b) * hidden + j] = h[j] }
            }
        }
        for threads in [1, 2] {
            let (y, final, _) = try withThreads(threads) { try layer.forward(x, state: nil) }
            let worst = zip(y.scalars, expected).map { abs(Double($0) - $1) }.max() ?? 0
            let worstFinal = zip(final.h.scalars, expectedFinal).map { abs(Double($0) - $1) }.max() ?? 0
            #expect(worst < 1e-5, "largest difference \(worst) on \(threads) threads")
            #expect(worstFinal < 1e-5, "largest difference in the final state \(worstFinal) on \(threads) threads")
        }
    }

    @Test func badInputThrows() throws {
        let lstm = try LSTM(inputSize: 3, hiddenSize: 4, batchFirst: true)
        expectError(.shapeMismatch, mentioning: ["LSTM(input: 3, hidden: 4)", "[2, 5]", "expected [N, T, 3]"]) {
            _ = try lstm(Tensor(shape: [2, 5]))
        }
        expectError(.shapeMismatch, mentioning: ["LSTM", "[2, 5, 2]", "expected [N, T, 3]"]) {
            _ = try lstm(Tensor(shape: [2, 5, 2]))
        }
        expectError(.shapeMismatch, mentioning: ["state has h [1, 3, 4]", "expected h and c of shape [1, 2, 4]"]) {
            _ = try lstm.forward(Tensor(shape: [2, 5, 3]), state: RecurrentState(h: Tensor(shape: [1, 3, 4])))
        }
        expectError(.shapeMismatch, mentioning: ["GRU", "expected h of shape [1, 2, 4]"]) {
            let gru = try GRU(inputSize: 3, hiddenSize: 4, batchFirst: true)
            _ = try gru.forward(
                Tensor(shape: [2, 5, 3]),
                state: RecurrentState(h: Tensor(shape: [1, 2, 4]), c: Tensor(shape: [1, 2, 4])))
        }
        expectError(.invalidArgument, mentioning: ["RNN(input: 3, hidden: 0)", "positive"]) {
            _ = try RNN(inputSize: 3, hiddenSize: 0)
        }
    }
}

@Suite struct EmbeddingTests {
    /// By hand: weight rows k = [k, 10k]; indices [[2, 0], [2, 1]] with row 0 the padding row.
    /// y gathers the rows; the gradient of row 2 sums both of its positions, row 0 gets none.
    @Test func gatherAndAccumulateByHand() throws {
        let embedding = try Embedding(3, 2, paddingIndex: 0)
        try embedding.weight.load(Tensor(shape: [3, 2], scalars: [0, 0, 1, 10, 2, 20]), name: "weight")
        let indices = try Tensor(shape: [2, 2], scalars: [2, 0, 2, 1])
        let (y, backward) = try embedding.forward(indices)
        #expect(y.shape == [2, 2, 2])
        #expect(y.scalars == [2, 20, 0, 0, 2, 20, 1, 10])
        let dx = try backward(Tensor(shape: [2, 2, 2], scalars: [1, 2, 3, 4, 5, 6, 7, 8]))
        #expect(dx.scalars == [0, 0, 0, 0], "indices are not differentiable")
        #expect(embedding.weight.grad.scalars == [0, 0, 7, 8, 6, 8])
    }

    /// 1000 positions: four chunks of 256 rows and a short one, each row prefetched ahead; rows
    /// shorter than the copy's 16 floats, and rows of two whole copies and a rest.
    @Test(arguments: [5, 37]) func everyRowIsGathered(dimension: Int) throws {
        var random = TestRandom(seed: 6)
        let scalars = (0..<1000).map { _ in Float(random.next() % 300) }
        let embedding = try Embedding(300, dimension, seed: 7)
        let y = try embedding.forward(Tensor(shape: [1000], scalars: scalars)).output
        let weight = embedding.weight.value.scalars
        #expect(y.scalars == scalars.flatMap { weight[Int($0) * dimension..<(Int($0) + 1) * dimension] })
    }

    @Test func weightGradientMatchesFiniteDifferences() throws {
        let embedding = try Embedding(7, 3, seed: 2)
        let report = try GradientCheck.run(
            embedding, input: Tensor(shape: [2, 4], scalars: [1, 3, 3, 6, 0, 1, 5, 3]), checkInput: false)
        #expect(report.passed, "\(report)")
    }

    @Test func paddingRowStartsAtZeroAndCountsFromTheEnd() throws {
        let embedding = try Embedding(4, 3, paddingIndex: -1)
        #expect(embedding.paddingIndex == 3)
        #expect(embedding.weight.value.scalars[9..<12].allSatisfy { $0 == 0 })
    }

    @Test func bitsDoNotDependOnTheThreadCount() throws {
        var random = TestRandom(seed: 3)
        let indices = try Tensor(shape: [64, 128], scalars: (0..<64 * 128).map { _ in Float(random.next() % 500) })
        try expectBitIdentical {
            let embedding = try Embedding(500, 64, seed: 4)
            let (y, backward) = try embedding.forward(indices)
            _ = try backward(randomTensor(y.shape, seed: 5))
            return [bits(y.scalars), bits(embedding.weight.grad.scalars)]
        }
    }

    @Test func badIndicesThrow() throws {
        let embedding = try Embedding(4, 2)
        expectError(.invalidArgument, mentioning: ["Embedding(4, 2)", "index -1.0 at 1", "[0, 4)"]) {
            _ = try embedding(Tensor(shape: [3], scalars: [0, -1, 2]))
        }
        expectError(.invalidArgument, mentioning: ["index 4.0 at 0"]) {
            _ = try embedding(Tensor(shape: [1], scalars: [4]))
        }
        expectError(.invalidArgument, mentioning: ["index 1.5"]) {
            _ = try embedding(Tensor(shape: [1], scalars: [1.5]))
        }
        expectError(.invalidArgument, mentioning: ["index 0.5 at 2"]) {  // a bad value that truncates to 0
            _ = try embedding(Tensor(shape: [3], scalars: [0, -0.0, 0.5]))
        }
        expectError(.invalidArgument, mentioning: ["index nan at 2"]) {
            _ = try embedding(Tensor(shape: [5], scalars: [0, 3, .nan, 2, .infinity]))
        }
        expectError(.invalidArgument, mentioning: ["index inf at 1"]) {
            _ = try embedding(Tensor(shape: [2], scalars: [1, .infinity]))
        }
        #expect(try embedding(Tensor(shape: [0, 3], scalars: [])).shape == [0, 3, 2])
        #expect(
            try embedding(Tensor(shape: [1], scalars: [-0.0])).scalars
                == embedding.weight.value.scalars[0..<2].map { $0 })
        expectError(.invalidArgument, mentioning: ["padding index 4"]) { _ = try Embedding(4, 2, paddingIndex: 4) }
    }
}

@Suite struct SequenceShapeTests {
    /// Rows: image element (b, c, h, w) is sequence element (b, h, c · W + w), and the backward
    /// moves each gradient back to its pixel, for one channel and for several.
    @Test(arguments: [1, 3])
    func rowsPermuteBothWays(channels: Int) throws {
        let (n, h, w) = (2, 4, 5)
        let x = randomTensor([n, channels, h, w], seed: 3)
        let (y, backward) = try Rows().forward(x)
        #expect(y.shape == [n, h, channels * w])
        let g = randomTensor(y.shape, seed: 4)
        let dx = try backward(g)
        for b in 0..<n {
            for c in 0..<channels {
                for row in 0..<h {
                    for col in 0..<w {
                        let image = ((b * channels + c) * h + row) * w + col
                        let sequence = (b * h + row) * channels * w + c * w + col
                        #expect(y[sequence] == x[image])
                        #expect(dx[image] == g[sequence])
                    }
                }
            }
        }
    }

    /// Both backwards against finite differences.
    @Test func gradientCheck() throws {
        try expectGradientsCorrect(Rows(), input: randomTensor([2, 3, 4, 5], seed: 7))
        try expectGradientsCorrect(LastStep(), input: randomTensor([3, 4, 2], seed: 8))
    }

    /// LastStep: u[b] = x[b, T − 1]; the backward puts g[b] there and zeros at every other step.
    @Test func lastStepTakesTheLastStep() throws {
        let (n, t, f) = (3, 4, 2)
        let x = randomTensor([n, t, f], seed: 5)
        let (u, backward) = try LastStep().forward(x)
        #expect(u.shape == [n, f])
        let g = randomTensor(u.shape, seed: 6)
        let dx = try backward(g)
        for b in 0..<n {
            for s in 0..<t {
                for j in 0..<f {
                    #expect(dx[(b * t + s) * f + j] == (s == t - 1 ? g[b * f + j] : 0))
                    if s == t - 1 { #expect(u[b * f + j] == x[(b * t + s) * f + j]) }
                }
            }
        }
    }
}
