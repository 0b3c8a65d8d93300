import CKernels

/// A layer's backward over the micro-batches of one batch that this process runs: given the
/// gradients at the layer's outputs (one per micro-batch, in order) it returns those at its inputs,
/// calling `collect(i)` as soon as micro-batch i's parameter gradients are in the parameters' `grad`
/// (and only its), so that the caller can keep each micro-batch's gradients apart.
package typealias MicroBatchBackward = (_ gradOutputs: [Tensor], _ collect: (Int) throws -> Void) throws -> [Tensor]

/// Combines this process's values, `width` for each of its micro-batches that has examples, into
/// `width` for every micro-batch of the batch in micro-batch order (zeros for one without examples),
/// across every process of a data-parallel run (`ProcessGroup.allGather`).
package typealias MicroBatchGather = (_ local: [Double], _ width: Int) throws -> [Double]

extension BatchNorm {
    /// Applies the running statistics' update of one (micro-)batch from its moments [C, 3] (as
    /// `deferredMoments` held them), as the training forward would have, and counts the batch.
    /// Moments of a micro-batch that had no examples (count 0) change nothing.
    package func updateRunningStatistics(with moments: ArraySlice<Double>) {
        guard let runningMean, let runningVar, moments.count == 3 * numFeatures, moments.first ?? 0 > 0 else { return }
        var mean = [Float](repeating: 0, count: 2 * numFeatures), rstd = [Float](repeating: 0, count: numFeatures)
        Array(moments).withUnsafeBufferPointer { m in
            runningMean.value.withMutablePointer { rm in
                runningVar.value.withMutablePointer { rv in
                    bp_batchnorm_statistics(&mean, &rstd, rm, rv, m.baseAddress, Int64(numFeatures), eps, momentum)
                }
            }
        }
        batchesTracked?.value += 1
    }

    /// Synchronized batch norm: the training forward of this process's micro-batches `inputs` of one
    /// batch, normalised with the statistics of the whole batch. Each micro-batch's moments per
    /// channel go through `gather`, which returns those of every micro-batch of the batch in order
    /// (all zero for one without examples); they are merged in that order, so every process gets the
    /// same statistics, and the running statistics are updated once, with them, as for one batch.
    /// The backward gathers each micro-batch's sums Σ v and Σ v · (x − μ) the same way, for
    /// ∂J/∂x = γ · rstd · (v − mean(v) − x̂ · mean(v · x̂)) with the means over the whole batch;
    /// ∂J/∂γ and ∂J/∂β of each micro-batch are its own sums. With `fusingReLU` a ReLU follows, as in
    /// `forward(_:fusingReLU:)`.
    package func synchronizedForward(
        _ inputs: [Tensor], fusingReLU: Bool, gather: @escaping MicroBatchGather
    ) throws -> (outputs: [Tensor], backward: MicroBatchBackward) {
        let sizes = try inputs.map { try self.sizes(of: $0, batchStatistics: true) }
        let c = numFeatures, relu: Int32 = fusingReLU ? 1 : 0
        var local = [Double](repeating: 0, count: 3 * c * inputs.count)
        for (i, (input, size)) in zip(inputs, sizes).enumerated() {
            let missing = input.withPointer { x in
                local.withUnsafeMutableBufferPointer {
                    bp_batchnorm_moments($0.baseAddress! + 3 * c * i, x, size.n, size.c, size.hw)
                }
            }
            try checkAllocation(missing, self)
        }
        let merged = Self.mergeInOrder(try gather(local, 3 * c), width: 3 * c) { total, next in
            bp_batchnorm_merge_moments(total, next, Int64(c))
        }
        var mean = [Float](repeating: 0, count: 2 * c), rstd = [Float](repeating: 0, count: c)
        withOptionalBufferPointers(runningMean, runningVar) { rm, rv in
            bp_batchnorm_statistics(&mean, &rstd, rm, rv, merged, Int64(c), eps, momentum)
        }
        if runningMean != nil { batchesTracked?.value += 1 }
        let count = merged[0]
        let outputs = zip(inputs, sizes).map { input, size in
            input.withPointer { x in
                withOptionalPointer(weight?.value) { gamma in
                    withOptionalPointer(bias?.value) { beta in
                        Tensor.filled(input.shape) {
                            bp_batchnorm_normalize($0, x, mean, rstd, gamma, beta, size.n, size.c, size.hw, relu)
                        }
                    }
                }
            }
        }
        return (
            outputs,
            { [weight, bias] gradOutputs, collect in
                for (gradOutput, input) in zip(gradOutputs, inputs) {
                    try checkGradient(gradOutput, matches: input.shape, in: self)
                }
                let gammaValue = weight?.value, betaValue = bias?.value
                var own = [Double](repeating: 0, count: 2 * c * inputs.count)
                for (i, (dy, (input, size))) in zip(gradOutputs, zip(inputs, sizes)).enumerated() {
                    dy.withPointer { dy in
                        input.withPointer { x in
                            withOptionalPointer(gammaValue) { gamma in
                                withOptionalPointer(betaValue) { beta in
                                    own.withUnsafeMutableBufferPointer {
                                        bp_batchnorm_gradient_sums(
                                            $0.baseAddress! + 2 * c * i, dy, x, mean, rstd, gamma, beta, size.n,
                                            size.c, size.hw, relu)
                                    }
                                }
                            }
                        }
                    }
                }
                let sums = Self.mergeInOrder(try gather(own, 2 * c), width: 2 * c) { total, next in
                    for k in 0..<2 * c { total[k] += next[k] }
                }
                return try zip(gradOutputs, zip(inputs, sizes)).enumerated().map { i, item in
                    let (gradOutput, (input, size)) = item
                    let dx = try gradOutput.withPointer { dy in
                        try input.withPointer { x in
                            try withOptionalPointer(gammaValue) { gamma in
                                try withOptionalPointer(betaValue) { beta in
                                    try withOptionalMutablePointer(weight) { dgamma in
                                        try withOptionalMutablePointer(bias) { dbeta in
                                            try own.withUnsafeBufferPointer { own in
                                                try Tensor.computed(input.shape, by: self) {
                                                    bp_batchnorm_backward_from_sums(
                                                        $0, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, sums,
                                                        own.baseAddress! + 2 * c * i, count, size.n, size.c,
                                                        size.hw, relu)
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    try collect(i)
                    return dx
                }
            }
        )
    }

    /// The gathered values of every micro-batch ([micro-batches, width]) combined by `merge` into
    /// a total that starts at zero, in micro-batch order.
    private static func mergeInOrder(
        _ all: [Double], width: Int, _ merge: (UnsafeMutablePointer<Double>, UnsafePointer<Double>) -> Void
    ) -> [Double] {
        var total = [Double](repeating: 0, count: width)
        all.withUnsafeBufferPointer { all in
            total.withUnsafeMutableBufferPointer { total in
                for start in stride(from: 0, to: all.count, by: width) {
                    merge(total.baseAddress!, all.baseAddress! + start)
                }
            }
        }
        return total
    }
}
