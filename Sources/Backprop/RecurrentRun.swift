import CKernels

/// One forward of a RecurrentLayer over a batch-first x [N, T, F], holding what its backward through
/// time needs: each layer's input and output, what each direction's cells saved, and the seed of
/// the dropout after each layer (nil: none).
struct RecurrentRun {
    let layer: RecurrentLayer
    let n: Int, t: Int
    let h0: Tensor, c0: Tensor?
    /// The products' precision (`Precision.kernelCode`) of the forward, which its backward keeps.
    let precision = Precision.kernelCode
    private(set) var inputs: [[Float]] = []
    private(set) var outputs: [[Float]] = []
    private(set) var saved: [[Float]] = []
    private(set) var dropoutSeeds: [UInt64?] = []
    private(set) var output = Tensor(unchecked: [0], scalars: [])
    private(set) var finalState = RecurrentState(h: Tensor(unchecked: [0], scalars: []))

    init(_ layer: RecurrentLayer, x: Tensor, h0: Tensor, c0: Tensor?) throws {
        (self.layer, self.h0, self.c0, n, t) = (layer, h0, c0, x.shape[0], x.shape[1])
        let (hidden, directions) = (layer.hiddenSize, layer.directions)
        var finalH = [Float](repeating: 0, count: h0.count), finalC = c0.map { [Float](repeating: 0, count: $0.count) }
        var input = x.scalars
        for index in 0..<layer.layers {
            var y = unwritten(n * t * hidden * directions)  // each direction writes its columns
            for direction in 0..<directions {
                var p = parameters(index, direction)
                var cells = unwritten(n * t * Int(bp_rnn_saved_per_row(&p)))
                let slot = (index * directions + direction) * n * hidden
                var hn = [Float](repeating: 0, count: n * hidden), cn = hn
                let w = layer.weights(index, direction)
                let missing = slice(h0, slot).withPointer { h in
                    withOptionalPointer(c0.map { slice($0, slot) }) { c in
                        withOptionalPointer(w.biasIH?.value) { bih in
                            withOptionalPointer(w.biasHH?.value) { bhh in
                                bp_rnn_forward(
                                    &y, &hn, &cn, &cells, input, h, c, w.ih.value.scalars, w.hh.value.scalars, bih, bhh,
                                    &p)
                            }
                        }
                    }
                }
                try checkAllocation(missing, layer)
                finalH.replaceSubrange(slot..<slot + n * hidden, with: hn)
                finalC?.replaceSubrange(slot..<slot + n * hidden, with: cn)
                saved.append(cells)
            }
            inputs.append(input)
            outputs.append(y)
            input = y
            if index + 1 < layer.layers, layer.isTraining, layer.dropout > 0 {
                let seed = layer.randomState.generator.next()
                input = unwritten(y.count)
                bp_dropout_forward(&input, y, layer.dropout, seed, Int64(y.count))
                dropoutSeeds.append(seed)
            } else {
                dropoutSeeds.append(nil)
            }
        }
        output = Tensor(unchecked: [n, t, hidden * directions], scalars: outputs[layer.layers - 1])
        finalState = RecurrentState(
            h: Tensor(unchecked: h0.shape, scalars: finalH), c: finalC.map { Tensor(unchecked: h0.shape, scalars: $0) })
    }

    /// The kernels' parameters for layer `index`, direction `direction`.
    func parameters(_ index: Int, _ direction: Int) -> bp_rnn_params {
        let (hidden, directions) = (layer.hiddenSize, layer.directions)
        return bp_rnn_params(
            n: Int64(n), t: Int64(t), input: Int64(index == 0 ? layer.inputSize : hidden * directions),
            hidden: Int64(hidden), y_stride: Int64(hidden * directions), y_offset: Int64(direction * hidden),
            kind: Int32(layer.kind.rawValue), reverse: Int32(direction), precision: precision)
    }

    /// Backpropagation through time from dy [N, T, H · D] and the final state's gradient (nil:
    /// zeros): adds every weight's gradient, returns dx [N, T, F] (without `inputGradient`, an
    /// empty tensor: the first layer's input gradient is not computed) and the initial state's gradient.
    func backward(
        _ dy: Tensor, _ dState: RecurrentState?, inputGradient: Bool = true
    ) throws -> (Tensor, RecurrentState) {
        let (hidden, directions) = (layer.hiddenSize, layer.directions)
        var dh0 = [Float](repeating: 0, count: h0.count), dc0 = c0.map { [Float](repeating: 0, count: $0.count) }
        var gradient = dy.scalars
        for index in (0..<layer.layers).reversed() {
            let skipped = index == 0 && !inputGradient
            var dx = unwritten(skipped ? 0 : inputs[index].count)  // the first direction overwrites it
            for direction in 0..<directions {
                var p = parameters(index, direction)
                let slot = (index * directions + direction) * n * hidden
                var dhSlot = [Float](repeating: 0, count: n * hidden), dcSlot = dhSlot
                let w = layer.weights(index, direction)
                let cells = saved[index * directions + direction]
                let missing = dx.withUnsafeMutableBufferPointer { dxBuffer in
                    let dxPointer = skipped ? nil : dxBuffer.baseAddress
                    return slice(h0, slot).withPointer { h in
                        withOptionalPointer(c0.map { slice($0, slot) }) { c in
                            withOptionalPointer(dState.map { slice($0.h, slot) }) { dhn in
                                withOptionalPointer(dState?.c.map { slice($0, slot) }) { dcn in
                                    w.ih.grad.withMutablePointer { dwih in
                                        w.hh.grad.withMutablePointer { dwhh in
                                            withOptionalMutablePointer(w.biasIH) { dbih in
                                                withOptionalMutablePointer(w.biasHH) { dbhh in
                                                    bp_rnn_backward(
                                                        dxPointer, &dhSlot, &dcSlot, dwih, dwhh, dbih, dbhh,
                                                        gradient, dhn, dcn,
                                                        cells, outputs[index], inputs[index], h, c, w.ih.value.scalars,
                                                        w.hh.value.scalars, direction > 0 ? 1 : 0, &p)
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                try checkAllocation(missing, layer)
                dh0.replaceSubrange(slot..<slot + n * hidden, with: dhSlot)
                dc0?.replaceSubrange(slot..<slot + n * hidden, with: dcSlot)
            }
            gradient = dx
            if index > 0, let seed = dropoutSeeds[index - 1] {
                bp_dropout_backward(&gradient, dx, layer.dropout, seed, Int64(dx.count))
            }
        }
        return (
            Tensor(unchecked: inputGradient ? [n, t, layer.inputSize] : [0], scalars: gradient),
            RecurrentState(
                h: Tensor(unchecked: h0.shape, scalars: dh0), c: dc0.map { Tensor(unchecked: h0.shape, scalars: $0) })
        )
    }
}

/// An array of `count` floats whose every element a kernel writes before anything reads it.
private func unwritten(_ count: Int) -> [Float] {
    [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
}

/// The [N, H] slice of a state tensor [layers · directions, N, H] starting at element `start`.
private func slice(_ state: Tensor, _ start: Int) -> Tensor {
    let size = state.shape[1] * state.shape[2]
    return Tensor(unchecked: [state.shape[1], state.shape[2]], scalars: Array(state.scalars[start..<start + size]))
}
