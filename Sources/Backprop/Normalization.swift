import CKernels

/// Batch normalization over the channel axis of x [N, C, *] (BatchNorm2D: [N, C, H, W];
/// BatchNorm1D: [N, C] or [N, C, L]), as PyTorch's: u = (x − μ_c) / √(σ²_c + ε) · γ_c + β_c.
///
/// Training mode uses the batch's mean and biased variance over the N · (H · W) values of each
/// channel and updates the running statistics (running = (1 − momentum) · running + momentum ·
/// batch, with the unbiased variance). Evaluation mode uses the running statistics (or the batch's
/// when `trackRunningStats` is off). The backward in training mode is
/// ∂J/∂x = γ · rstd · (v − mean(v) − x̂ · mean(v · x̂)); in evaluation mode γ · rstd · v.
/// ∂J/∂γ += Σ v · x̂, ∂J/∂β += Σ v. Saves the mean (as a float pair) and reciprocal std per
/// channel (3 · C floats).
public class BatchNorm: Module {
    public let numFeatures: Int
    public let eps: Float
    public let momentum: Float
    public let weight: Parameter?
    public let bias: Parameter?
    public let runningMean: Buffer?
    public let runningVar: Buffer?
    /// Training-mode forwards that updated the running statistics (PyTorch's num_batches_tracked).
    public let batchesTracked: Counter?
    public var isTraining = true
    /// Set by data-parallel training, which applies the running statistics' updates of a batch's
    /// micro-batches in micro-batch order: a training forward then leaves the running statistics and
    /// `batchesTracked` alone, normalises with its batch's statistics as always, and keeps their moments
    /// ([C, 3]: count, mean, M2 per channel) in `deferredMoments` for `updateRunningStatistics(with:)`.
    package var defersRunningUpdate = false
    package private(set) var deferredMoments: [Double] = []
    private let name: String
    private let ranks: Set<Int>

    init(
        name: String, ranks: Set<Int>, numFeatures: Int, eps: Float, momentum: Float, affine: Bool,
        trackRunningStats: Bool
    ) throws {
        self.name = name
        self.ranks = ranks
        self.numFeatures = numFeatures
        self.eps = eps
        self.momentum = momentum
        guard numFeatures > 0 else {
            throw BackpropError(.invalidArgument, "\(name)(\(numFeatures)): features must be positive")
        }
        guard eps > 0, eps.isFinite else {
            throw BackpropError(.invalidArgument, "\(name)(\(numFeatures)): eps must be > 0, got \(eps)")
        }
        guard momentum >= 0, momentum <= 1 else {
            throw BackpropError(
                .invalidArgument, "\(name)(\(numFeatures)): momentum must be in [0, 1], got \(momentum)")
        }
        weight = affine ? Parameter(try Tensor(shape: [numFeatures], repeating: 1)) : nil
        bias = affine ? Parameter(try Tensor(shape: [numFeatures], repeating: 0)) : nil
        runningMean = trackRunningStats ? Buffer(try Tensor(shape: [numFeatures], repeating: 0)) : nil
        runningVar = trackRunningStats ? Buffer(try Tensor(shape: [numFeatures], repeating: 1)) : nil
        batchesTracked = trackRunningStats ? Counter() : nil
    }

    public var description: String { "\(name)(\(numFeatures))" }

    public var ownParameters: [(name: String, parameter: Parameter)] {
        weightAndBias(weight, bias)
    }

    public var ownBuffers: [(name: String, buffer: Buffer)] {
        [runningMean.map { ("running_mean", $0) }, runningVar.map { ("running_var", $0) }].compactMap { $0 }
    }

    public var ownCounters: [(name: String, counter: Counter)] {
        batchesTracked.map { [("num_batches_tracked", $0)] } ?? []
    }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        try forward(input, fusingReLU: false)
    }

    /// Followed by a ReLU, the two run as one layer (`forward(_:fusingReLU:)`).
    public func fused(with next: Module) -> Module? {
        next is ReLU ? BatchNormReLU(self) : nil
    }

    /// With `fusingReLU`, the output is ReLU(u) and the backward takes the gradient at it: one pass
    /// over the data each way instead of two (Sequential fuses a BatchNorm followed by a ReLU), and
    /// the backward recomputes where u > 0 from the input instead of keeping u. The bits are those
    /// of the two layers one after the other.
    /// The sizes n, c and hw (the values per channel and image) of a valid input; throws for
    /// another shape, or for a single value per channel when the batch's statistics are to be taken.
    func sizes(of input: Tensor, batchStatistics: Bool) throws -> (n: Int64, c: Int64, hw: Int64) {
        guard ranks.contains(input.rank), input.shape[1] == numFeatures, input.shape.allSatisfy({ $0 > 0 }) else {
            let trailing = [2: "", 3: ", L", 4: ", H, W"]
            let expected = ranks.sorted().map { "[N, \(numFeatures)\(trailing[$0] ?? "")]" }.joined(separator: " or ")
            throw BackpropError(
                .shapeMismatch, "\(self): input has shape \(describe(input.shape)), expected \(expected)")
        }
        let (n, c) = (Int64(input.shape[0]), Int64(numFeatures)), hw = Int64(input.count / input.shape[0] / numFeatures)
        if batchStatistics, n * hw <= 1 {
            throw BackpropError(
                .invalidArgument,
                "\(self): expected more than 1 value per channel when training, got input of shape \(describe(input.shape))"
            )
        }
        return (n, c, hw)
    }

    /// Whether a forward normalises with the batch's own statistics: in training, or without
    /// running statistics.
    var usesBatchStatistics: Bool { isTraining || runningMean == nil }

    /// Whether a training forward leaves the running statistics' update to
    /// `updateRunningStatistics(with:)` (statistics over several micro-batches).
    var defersStatistics: Bool { isTraining && defersRunningUpdate && runningMean != nil }

    /// The saved statistics as the backward kernels read them: mean [C, 2] (hi, lo) and rstd [C].
    func savedStatistics(_ mean: [Float], _ rstd: [Float]) -> (mean: Tensor, rstd: Tensor) {
        (Tensor(unchecked: [numFeatures, 2], scalars: mean), Tensor(unchecked: [numFeatures], scalars: rstd))
    }

    func forward(_ input: Tensor, fusingReLU: Bool) throws -> (output: Tensor, backward: Backward) {
        let batchStatistics = usesBatchStatistics
        let (n, c, hw) = try sizes(of: input, batchStatistics: batchStatistics)
        let deferring = defersStatistics
        var mean = Tensor(unchecked: [numFeatures], scalars: []), rstd = mean, missing: Int64 = 0
        let output: Tensor = input.withPointer { x in
            withOptionalPointer(weight?.value) { gamma in
                withOptionalPointer(bias?.value) { beta in
                    if deferring {
                        var moments = [Double](repeating: 0, count: 3 * numFeatures),
                            m = [Float](repeating: 0, count: 2 * numFeatures),
                            r = [Float](repeating: 0, count: numFeatures)
                        missing = bp_batchnorm_moments(&moments, x, n, c, hw)
                        bp_batchnorm_statistics(&m, &r, nil, nil, moments, c, eps, momentum)
                        (mean, rstd) = savedStatistics(m, r)
                        deferredMoments = moments
                        return Tensor.filled(input.shape) {
                            bp_batchnorm_normalize($0, x, m, r, gamma, beta, n, c, hw, fusingReLU ? 1 : 0)
                        }
                    }
                    if batchStatistics {
                        var m = [Float](repeating: 0, count: 2 * numFeatures),
                            r = [Float](repeating: 0, count: numFeatures)
                        let y = Tensor.filled(input.shape) { y in
                            withOptionalBufferPointers(isTraining ? runningMean : nil, isTraining ? runningVar : nil) {
                                rm, rv in
                                missing = bp_batchnorm_forward_train(
                                    y, &m, &r, rm, rv, x, gamma, beta, n, c, hw, eps,
                                    momentum, fusingReLU ? 1 : 0)
                            }
                        }
                        (mean, rstd) = savedStatistics(m, r)
                        return y
                    }
                    let (rm, rv) = (runningMean!.value, runningVar!.value)
                    mean = Tensor(unchecked: [numFeatures, 2], scalars: rm.scalars.flatMap { [$0, 0] })
                    rstd = Tensor(
                        unchecked: [numFeatures],
                        scalars: rv.scalars.map { Float(1 / (Double($0) + Double(eps)).squareRoot()) })
                    return rm.withPointer { m in
                        rv.withPointer { v in
                            Tensor.filled(input.shape) {
                                bp_batchnorm_forward_eval($0, x, m, v, gamma, beta, n, c, hw, eps, fusingReLU ? 1 : 0)
                            }
                        }
                    }
                }
            }
        }
        try checkAllocation(missing, self)
        if isTraining && !deferring { batchesTracked?.value += 1 }
        let saved = SavedTensor(input), shape = input.shape  // rounded in a bfloat16 scope
        return (
            output,
            { [weight, bias] gradOutput in
                try checkGradient(gradOutput, matches: shape, in: self)
                let (dx, missing) = saved.overwritingExpansion { dx, x in
                    withBackwardPointers(gradOutput, mean, rstd, weight, bias) { dy, m, r, gamma, beta, dgamma, dbeta in
                        bp_batchnorm_backward(
                            dx, dgamma, dbeta, dy, x, m, r, gamma, beta, n, c, hw, batchStatistics ? 1 : 0,
                            fusingReLU ? 1 : 0)
                    }
                }
                try checkAllocation(missing, self)
                return dx
            }
        )
    }
}

extension BatchNorm {
    /// The training forward with a ReLU and the max pooling `parameters` (of `pool`) fused after it:
    /// the normalised values and their gradient never reach memory, the bits are those of the three
    /// layers. Nil where that does not apply: statistics not of this batch, running statistics
    /// deferred, or windows that do not tile the input (bp_batchnorm_relu_maxpool_fusable).
    func forwardPooled(
        _ input: Tensor, pool parameters: bp_pool2d_params, of pool: Module
    ) throws -> (
        output: Tensor, backward: Backward
    )? {
        var p = parameters
        guard usesBatchStatistics, !defersStatistics, bp_batchnorm_relu_maxpool_fusable(&p) != 0 else { return nil }
        _ = try sizes(of: input, batchStatistics: true)
        let outputShape = [input.shape[0], numFeatures, Int(p.out_h), Int(p.out_w)]
        var m = [Float](repeating: 0, count: 2 * numFeatures), r = [Float](repeating: 0, count: numFeatures)
        var index: [UInt8] = [], missing: Int64 = 0
        let output: Tensor = input.withPointer { x in
            withOptionalPointer(weight?.value) { gamma in
                withOptionalPointer(bias?.value) { beta in
                    Tensor.filled(outputShape) { y in
                        index = uninitializedArray(outputShape.reduce(1, *)) { argmax in
                            withOptionalBufferPointers(isTraining ? runningMean : nil, isTraining ? runningVar : nil) {
                                rm, rv in
                                missing = bp_batchnorm_relu_maxpool_forward_train(
                                    y, argmax, &m, &r, rm, rv, x, gamma, beta, &p, eps, momentum)
                            }
                        }
                    }
                }
            }
        }
        try checkAllocation(missing, self)
        if isTraining { batchesTracked?.value += 1 }
        let saved = SavedTensor(input), kept = KeptArgmax(.bytes(index))
        let (mean, rstd) = savedStatistics(m, r)
        return (
            output,
            { [weight, bias] gradOutput in
                try checkGradient(gradOutput, matches: outputShape, in: pool)
                guard case .bytes(let argmax) = kept.argmax else { preconditionFailure("a tiled pooling keeps bytes") }
                let (dx, missing) = saved.overwritingExpansion { dx, x in
                    withBackwardPointers(gradOutput, mean, rstd, weight, bias) { dy, m, r, gamma, beta, dgamma, dbeta in
                        bp_batchnorm_relu_maxpool_backward(dx, dgamma, dbeta, dy, argmax, x, m, r, gamma, beta, &p)
                    }
                }
                try checkAllocation(missing, self)
                return dx
            }
        )
    }
}

/// Calls `body` with what every batch-norm backward kernel reads and adds to: the output gradient,
/// the saved mean and rstd, gamma and beta and their gradients (nil without the affine parameters).
private func withBackwardPointers<R>(
    _ gradOutput: Tensor, _ mean: Tensor, _ rstd: Tensor, _ weight: Parameter?, _ bias: Parameter?,
    _ body: (
        UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>?,
        UnsafePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?
    ) -> R
) -> R {
    gradOutput.withPointer { dy in
        mean.withPointer { m in
            rstd.withPointer { r in
                withOptionalPointer(weight?.value) { gamma in
                    withOptionalPointer(bias?.value) { beta in
                        withOptionalMutablePointer(weight) { dgamma in
                            withOptionalMutablePointer(bias) { dbeta in body(dy, m, r, gamma, beta, dgamma, dbeta) }
                        }
                    }
                }
            }
        }
    }
}

/// A BatchNorm followed by a ReLU as one layer, for the container that holds both.
private final class BatchNormReLU: Module {
    let norm: BatchNorm

    init(_ norm: BatchNorm) { self.norm = norm }

    var isTraining: Bool {
        get { norm.isTraining }
        set { norm.isTraining = newValue }
    }

    var description: String { "\(norm) + ReLU()" }

    func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        try norm.forward(input, fusingReLU: true)
    }

    /// Followed by a max pooling, the three run as one layer (`BatchNormReLUMaxPool`).
    func fused(with next: Module) -> Module? {
        (next as? MaxPool2D).map { BatchNormReLUMaxPool(norm, $0) }
    }
}

/// A BatchNorm, a ReLU and a MaxPool2D as one layer, for the container that holds them: fused
/// (`BatchNorm.forwardPooled`) where that applies, else the layers one after the other.
private final class BatchNormReLUMaxPool: Module {
    let norm: BatchNorm
    let pool: MaxPool2D

    init(_ norm: BatchNorm, _ pool: MaxPool2D) { (self.norm, self.pool) = (norm, pool) }

    var isTraining: Bool {
        get { norm.isTraining }
        set { (norm.isTraining, pool.isTraining) = (newValue, newValue) }
    }

    var description: String { "\(norm) + ReLU() + \(pool)" }

    func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        _ = try norm.sizes(of: input, batchStatistics: false)  // the norm names a wrong shape first
        let parameters = try pool.window.parameters(for: input.shape, in: pool)
        if let fused = try norm.forwardPooled(input, pool: parameters, of: pool) { return fused }
        let (normalised, normBackward) = try norm.forward(input, fusingReLU: true)
        let (output, poolBackward) = try pool.forward(normalised)
        return (output, { try normBackward(poolBackward($0)) })
    }
}

/// Batch normalization of [N, C, H, W], as PyTorch's `nn.BatchNorm2d`.
public final class BatchNorm2D: BatchNorm {
    public init(
        _ numFeatures: Int, eps: Float = 1e-5, momentum: Float = 0.1, affine: Bool = true,
        trackRunningStats: Bool = true
    ) throws {
        try super.init(
            name: "BatchNorm2D", ranks: [4], numFeatures: numFeatures, eps: eps, momentum: momentum,
            affine: affine, trackRunningStats: trackRunningStats)
    }
}

/// Batch normalization of [N, C] or [N, C, L], as PyTorch's `nn.BatchNorm1d`.
public final class BatchNorm1D: BatchNorm {
    public init(
        _ numFeatures: Int, eps: Float = 1e-5, momentum: Float = 0.1, affine: Bool = true,
        trackRunningStats: Bool = true
    ) throws {
        try super.init(
            name: "BatchNorm1D", ranks: [2, 3], numFeatures: numFeatures, eps: eps, momentum: momentum,
            affine: affine, trackRunningStats: trackRunningStats)
    }
}

/// Calls `body` with the two buffers' values as mutable pointers, or nil for absent buffers.
func withOptionalBufferPointers<R>(
    _ a: Buffer?, _ b: Buffer?,
    _ body: (UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?) -> R
) -> R {
    guard let a, let b else { return body(nil, nil) }
    return a.value.withMutablePointer { pa in b.value.withMutablePointer { pb in body(pa, pb) } }
}

/// Layer normalization over the trailing axes given by `normalizedShape`, as PyTorch's
/// `nn.LayerNorm`: each row of D = ∏ normalizedShape values becomes u = x̂ · γ + β with
/// x̂ = (x − μ) / √(σ² + ε), μ and σ² (biased) over the row. Backward:
/// ∂J/∂x = rstd · (g − mean(g) − x̂ · mean(g · x̂)) with g = v · γ; ∂J/∂γ += Σ_rows v · x̂;
/// ∂J/∂β += Σ_rows v. Saves the mean (as a float pair) and reciprocal std per row (3 floats a row).
public final class LayerNorm: Module {
    public let normalizedShape: [Int]
    public let eps: Float
    public let weight: Parameter?
    public let bias: Parameter?
    public var isTraining = true

    public init(_ normalizedShape: [Int], eps: Float = 1e-5, elementwiseAffine: Bool = true, bias: Bool = true) throws {
        self.normalizedShape = normalizedShape
        self.eps = eps
        let name = "LayerNorm(\(describe(normalizedShape)))"
        guard !normalizedShape.isEmpty, normalizedShape.allSatisfy({ $0 > 0 }) else {
            throw BackpropError(.invalidArgument, "\(name): the normalized shape must have positive sizes")
        }
        guard eps > 0, eps.isFinite else {
            throw BackpropError(.invalidArgument, "\(name): eps must be > 0, got \(eps)")
        }
        weight = elementwiseAffine ? Parameter(try Tensor(shape: normalizedShape, repeating: 1)) : nil
        self.bias = elementwiseAffine && bias ? Parameter(try Tensor(shape: normalizedShape, repeating: 0)) : nil
    }

    public convenience init(
        _ features: Int, eps: Float = 1e-5, elementwiseAffine: Bool = true, bias: Bool = true
    ) throws {
        try self.init([features], eps: eps, elementwiseAffine: elementwiseAffine, bias: bias)
    }

    public var description: String { "LayerNorm(\(describe(normalizedShape)))" }

    public var ownParameters: [(name: String, parameter: Parameter)] {
        weightAndBias(weight, bias)
    }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        guard input.rank >= normalizedShape.count, Array(input.shape.suffix(normalizedShape.count)) == normalizedShape,
            input.count > 0
        else {
            throw BackpropError(
                .shapeMismatch,
                "\(self): input has shape \(describe(input.shape)), expected [*, \(normalizedShape.map(String.init).joined(separator: ", "))]"
            )
        }
        let d = normalizedShape.reduce(1, *), rows = input.count / d
        var mean = [Float](repeating: 0, count: 2 * rows), rstd = [Float](repeating: 0, count: rows)
        let output = input.withPointer { x in
            withOptionalPointer(weight?.value) { gamma in
                withOptionalPointer(bias?.value) { beta in
                    Tensor.filled(input.shape) {
                        bp_layernorm_forward($0, &mean, &rstd, x, gamma, beta, Int64(rows), Int64(d), eps)
                    }
                }
            }
        }
        return (
            output,
            { [weight, bias] gradOutput in
                try checkGradient(gradOutput, matches: input.shape, in: self)
                return try gradOutput.withPointer { dy in
                    try input.withPointer { x in
                        try withOptionalPointer(weight?.value) { gamma in
                            try withOptionalMutablePointer(weight) { dgamma in
                                try withOptionalMutablePointer(bias) { dbeta in
                                    try Tensor.computed(input.shape, by: self) {
                                        bp_layernorm_backward(
                                            $0, dgamma, dbeta, dy, x, mean, rstd, gamma, Int64(rows), Int64(d))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        )
    }
}
