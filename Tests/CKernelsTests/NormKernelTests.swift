import BackpropTestSupport
import CKernels
import Testing

@Suite struct NormKernelTests {
    struct BatchCase: CustomStringConvertible, Sendable {
        let label: String
        let n, c, hw: Int
        var offset: Float = 0, spread: Float = 1
        var description: String { "\(label): n=\(n) c=\(c) hw=\(hw) mean \(offset) spread \(spread)" }
    }

    static let batchCases: [BatchCase] = [
        BatchCase(label: "batch 2", n: 2, c: 3, hw: 25),
        BatchCase(label: "batch 1, spatial", n: 1, c: 4, hw: 9),
        BatchCase(label: "spatial 1x1", n: 8, c: 6, hw: 1),
        BatchCase(label: "one channel", n: 4, c: 1, hw: 50),
        BatchCase(label: "wide planes", n: 2, c: 2, hw: 3001),
        BatchCase(label: "mean 1e4, std 0.1", n: 4, c: 3, hw: 100, offset: 1e4, spread: 0.1),
        BatchCase(label: "mean 1e3, std 0.01", n: 4, c: 3, hw: 100, offset: 1e3, spread: 0.01),
        BatchCase(label: "constant channels", n: 3, c: 2, hw: 10, offset: 2.5, spread: 0),
        // Blocks of 17 channels taken in stretches of 10 (forward) and 6 (backward), the last short.
        BatchCase(label: "channel stretches", n: 32, c: 136, hw: 400),
    ]

    static func data(_ count: Int, seed: UInt64, offset: Float, spread: Float) -> [Float] {
        var random = TestRandom(seed: seed)
        return random.floats(count).map { offset + spread * $0 }
    }

    @Test("batch norm forward and backward match the double-precision reference", arguments: batchCases, [true, false])
    func batchNorm(_ b: BatchCase, affine: Bool) {
        let count = b.n * b.c * b.hw, eps: Float = 1e-5
        let x = Self.data(count, seed: UInt64(count), offset: b.offset, spread: b.spread)
        var random = TestRandom(seed: 3)
        let gamma = affine ? random.floats(b.c, 0.5, 1.5) : [], beta = affine ? random.floats(b.c) : []
        let dy = random.floats(count)
        func optional(_ a: [Float]) -> [Float]? { affine ? a : nil }
        var y = [Float](repeating: .nan, count: count), yRef = y
        var mean = [Float](repeating: 0, count: 2 * b.c), rstd = [Float](repeating: 0, count: b.c), meanRef = mean,
            rstdRef = rstd
        var runningMean = [Float](repeating: 0.5, count: b.c), runningVar = [Float](repeating: 2, count: b.c)
        bp_batchnorm_forward_train(
            &y, &mean, &rstd, &runningMean, &runningVar, x, optional(gamma), optional(beta),
            Int64(b.n), Int64(b.c), Int64(b.hw), eps, 0.1, 0)
        bp_batchnorm_forward_train_ref(
            &yRef, &meanRef, &rstdRef, x, optional(gamma), optional(beta),
            Int64(b.n), Int64(b.c), Int64(b.hw), eps)
        #expect(relativeError(y, yRef) < 2e-5, "forward \(b)")
        #expect(y.allSatisfy { $0.isFinite }, "finite \(b)")
        #expect(relativeError(rstd, rstdRef) < 1e-6, "rstd \(b)")
        // Running statistics: 0.9 · old + 0.1 · batch (unbiased variance).
        let m = Double(b.n * b.hw)
        for ch in 0..<b.c {
            let unbiased = (1 / Double(rstdRef[ch]) / Double(rstdRef[ch]) - Double(eps)) * m / (m - 1)
            let batchMean = Double(meanRef[2 * ch]) + Double(meanRef[2 * ch + 1])
            #expect(
                abs(Double(runningMean[ch]) - (0.45 + 0.1 * batchMean)) <= 1e-6 * max(1, abs(batchMean)),
                "running mean \(b)")
            #expect(abs(Double(runningVar[ch]) - (1.8 + 0.1 * unbiased)) < 1e-4, "running var \(b)")
        }

        for batchStatistics: Int32 in [1, 0] {
            var dx = [Float](repeating: .nan, count: count), dxRef = dx
            var dgamma = [Float](repeating: 1, count: b.c), dbeta = dgamma, dgammaRef = dgamma, dbetaRef = dgamma
            // Evaluation mode normalises with the running statistics.
            let statsMean = batchStatistics == 1 ? mean : runningMean.flatMap { [$0, 0] }
            let statsRstd = batchStatistics == 1 ? rstd : runningVar.map { 1 / ($0 + eps).squareRoot() }
            let missing = withOptionalPair(affine, &dgamma, &dbeta) { dg, db in
                bp_batchnorm_backward(
                    &dx, dg, db, dy, x, statsMean, statsRstd, optional(gamma), optional(beta),
                    Int64(b.n), Int64(b.c), Int64(b.hw), batchStatistics, 0)
            }
            #expect(missing == 0)
            withOptionalPair(affine, &dgammaRef, &dbetaRef) { dg, db in
                bp_batchnorm_backward_ref(
                    &dxRef, dg, db, dy, x, optional(gamma), Int64(b.n), Int64(b.c), Int64(b.hw), eps,
                    batchStatistics, runningMean, runningVar)
            }
            #expect(relativeError(dx, dxRef) < 1e-4, "backward dx \(b) batch statistics \(batchStatistics)")
            #expect(dx.allSatisfy { $0.isFinite })
            if affine {
                #expect(relativeError(dgamma, dgammaRef) < 1e-4, "dgamma \(b) batch statistics \(batchStatistics)")
                #expect(relativeError(dbeta, dbetaRef) < 1e-5, "dbeta \(b)")
            }
        }
    }

    static let layerCases: [(label: String, rows: Int, d: Int, offset: Float, spread: Float)] = [
        ("one row", 1, 10, 0, 1), ("rows of 7", 5, 7, 0, 1), ("wide rows", 3, 3001, 0, 1), ("many rows", 40, 33, 0, 1),
        ("mean 1e4, std 0.1", 6, 64, 1e4, 0.1), ("mean 1e3, std 0.01", 6, 64, 1e3, 0.01),
        ("constant rows", 4, 16, -3, 0),
        // Outputs of 16 MB or more are streamed past the caches, in runs, rows not 64-byte aligned.
        ("rows past the caches", 1031, 4097, 0, 1),
    ]

    @Test("layer norm forward and backward match the double-precision reference", arguments: 0..<8, [true, false])
    func layerNorm(_ index: Int, affine: Bool) {
        let c = Self.layerCases[index], count = c.rows * c.d
        let x = Self.data(count, seed: UInt64(count), offset: c.offset, spread: c.spread)
        var random = TestRandom(seed: 4)
        let gamma = random.floats(c.d, 0.5, 1.5), beta = random.floats(c.d), dy = random.floats(count)
        var y = [Float](repeating: .nan, count: count), yRef = y
        var mean = [Float](repeating: 0, count: 2 * c.rows), rstd = [Float](repeating: 0, count: c.rows),
            meanRef = mean, rstdRef = rstd
        bp_layernorm_forward(
            &y, &mean, &rstd, x, affine ? gamma : nil, affine ? beta : nil, Int64(c.rows), Int64(c.d), 1e-5)
        bp_layernorm_forward_ref(
            &yRef, &meanRef, &rstdRef, x, affine ? gamma : nil, affine ? beta : nil, Int64(c.rows), Int64(c.d), 1e-5)
        #expect(relativeError(y, yRef) < 2e-5, "forward \(c.label)")
        var dx = [Float](repeating: .nan, count: count), dxRef = dx
        var dgamma = [Float](repeating: 0, count: c.d), dbeta = dgamma, dgammaRef = dgamma, dbetaRef = dgamma
        let missing = withOptionalPair(affine, &dgamma, &dbeta) { dg, db in
            bp_layernorm_backward(&dx, dg, db, dy, x, mean, rstd, affine ? gamma : nil, Int64(c.rows), Int64(c.d))
        }
        #expect(missing == 0)
        withOptionalPair(affine, &dgammaRef, &dbetaRef) { dg, db in
            bp_layernorm_backward_ref(&dxRef, dg, db, dy, x, affine ? gamma : nil, Int64(c.rows), Int64(c.d), 1e-5)
        }
        #expect(relativeError(dx, dxRef) < 1e-4, "backward \(c.label)")
        #expect(dx.allSatisfy { $0.isFinite })
        if affine {
            #expect(relativeError(dgamma, dgammaRef) < 1e-4, "dgamma \(c.label)")
            #expect(relativeError(dbeta, dbetaRef) < 1e-5, "dbeta \(c.label)")
        }
    }

    /// The forward takes its rows' statistics four rows at a time (the last rows one by one), a
    /// group's squared deviations in the pass that normalises the group before it and its means in
    /// the pass before that, or, as on AMD's cores with AVX-512 for rows of 128 or more, one row at a time: either
    /// way every row gets the bits it gets alone (41 × 2049: the threads share the groups; 41 × 100:
    /// groups on either vendor's cores).
    @Test(
        "layer norm's rows in groups get the bits each gets alone",
        arguments: [(9, 777), (8, 16), (5, 3001), (41, 2049), (41, 100), (13, 300)])
    func layerNormRowGroups(rows: Int, d: Int) {
        let x = Self.data(rows * d, seed: 11, offset: 50, spread: 3)
        func forward(_ x: [Float], rows: Int) -> [Float] {
            var y = [Float](repeating: .nan, count: rows * d), mean = [Float](repeating: 0, count: 2 * rows),
                rstd = [Float](repeating: 0, count: rows)
            bp_layernorm_forward(&y, &mean, &rstd, x, nil, nil, Int64(rows), Int64(d), 1e-5)
            return y + mean + rstd
        }
        for amd in [false, true] {
            let all = withCoreChoices(amd: amd) { forward(x, rows: rows) }
            for row in 0..<rows {
                let alone = forward(Array(x[row * d..<(row + 1) * d]), rows: 1)
                let statistics = rows * d
                let same =
                    bits(Array(alone[0..<d])) == bits(Array(all[row * d..<(row + 1) * d]))
                    && bits(Array(alone[d...]))
                        == bits([
                            all[statistics + 2 * row], all[statistics + 2 * row + 1], all[statistics + 2 * rows + row],
                        ])
                #expect(same, "row \(row) of \(rows) × \(d), choosing as on \(amd ? "AMD" : "Intel")'s cores")
            }
        }
    }

    /// A ReLU fused into batch norm gives the bits of batch norm followed by bp_relu_forward, and its
    /// backward those of bp_relu_backward followed by the batch-norm backward, in both modes.
    @Test("batch norm with a fused ReLU is bit for bit batch norm then ReLU", arguments: [1, 0])
    func fusedReLU(batchStatistics: Int32) {
        let (n, c, hw) = (3, 5, 37)
        let x = Self.data(n * c * hw, seed: 11, offset: 0.5, spread: 2)
        var random = TestRandom(seed: 12)
        let gamma = random.floats(c, 0.5, 1.5), beta = random.floats(c), dz = random.floats(x.count)
        let runningMean = random.floats(c), runningVar = random.floats(c, 0.5, 2)
        var mean = [Float](repeating: 0, count: 2 * c), rstd = [Float](repeating: 0, count: c)
        func forward(relu: Int32) -> [Float] {
            var y = [Float](repeating: .nan, count: x.count)
            if batchStatistics == 1 {
                bp_batchnorm_forward_train(
                    &y, &mean, &rstd, nil, nil, x, gamma, beta, Int64(n), Int64(c), Int64(hw), 1e-5, 0.1, relu)
            } else {
                bp_batchnorm_forward_eval(
                    &y, x, runningMean, runningVar, gamma, beta, Int64(n), Int64(c), Int64(hw), 1e-5, relu)
                mean = runningMean.flatMap { [$0, 0] }
                // As BatchNorm computes it.
                rstd = runningVar.map { Float(1 / (Double($0) + Double(Float(1e-5))).squareRoot()) }
            }
            return y
        }
        let y = forward(relu: 0), z = forward(relu: 1)
        var relu = [Float](repeating: .nan, count: x.count)
        bp_relu_forward(&relu, y, Int64(x.count))
        #expect(bits(z) == bits(relu), "forward")
        #expect(z.contains(0) && z.contains { $0 > 0 }, "the case has units on both sides of the ReLU")

        var dy = [Float](repeating: .nan, count: x.count)
        bp_relu_backward(&dy, dz, y, Int64(x.count))
        var dx = [Float](repeating: .nan, count: x.count), dg = [Float](repeating: 0, count: c), db = dg
        bp_batchnorm_backward(
            &dx, &dg, &db, dy, x, mean, rstd, gamma, beta, Int64(n), Int64(c), Int64(hw), batchStatistics, 0)
        var fusedDx = [Float](repeating: .nan, count: x.count), fusedDg = [Float](repeating: 0, count: c),
            fusedDb = fusedDg
        bp_batchnorm_backward(
            &fusedDx, &fusedDg, &fusedDb, dz, x, mean, rstd, gamma, beta, Int64(n), Int64(c), Int64(hw),
            batchStatistics, 1)
        #expect(bits(fusedDx) == bits(dx) && bits(fusedDg) == bits(dg) && bits(fusedDb) == bits(db), "backward")
    }

    /// Batch norm, ReLU and a tiled max pooling as one kernel give the bits of the three kernels
    /// one after the other, forward (pooled output, argmax, statistics) and backward (dx in place
    /// over x, as BatchNorm runs it, and the parameter gradients), for any thread count. Planes
    /// of 28 × 28 (rows of 14 windows: a full group of 8 and a short one), 7 × 9 (a row and a
    /// column outside every window) and 9 × 9 under 3 × 3 windows.
    @Test(
        "batch norm, ReLU and max pooling fused are bit for bit the three kernels",
        arguments: [(3, 5, 28, 28, 2), (2, 9, 7, 9, 2), (2, 3, 9, 9, 3), (1, 17, 14, 14, 2)])
    func fusedMaxPool(n: Int, c: Int, h: Int, w: Int, k: Int) {
        let hw = h * w, (oh, ow) = (h / k, w / k)
        var p = bp_pool2d_params(
            n: Int64(n), c: Int64(c), h: Int64(h), w: Int64(w), out_h: Int64(oh), out_w: Int64(ow),
            kernel_h: Int64(k), kernel_w: Int64(k), stride_h: Int64(k), stride_w: Int64(k), pad_h: 0, pad_w: 0,
            dilation_h: 1, dilation_w: 1, adaptive: 0, count_include_pad: 1, divisor_override: 0)
        #expect(bp_batchnorm_relu_maxpool_fusable(&p) == 1)
        let x = Self.data(n * c * hw, seed: 21, offset: 0.5, spread: 2)
        var random = TestRandom(seed: 22)
        let gamma = random.floats(c, 0.5, 1.5), beta = random.floats(c), dz = random.floats(n * c * oh * ow)
        func separate() -> [[UInt32]] {
            var u = [Float](repeating: .nan, count: x.count), mean = [Float](repeating: 0, count: 2 * c),
                rstd = [Float](repeating: 0, count: c), rm = rstd, rv = [Float](repeating: 1, count: c)
            bp_batchnorm_forward_train(
                &u, &mean, &rstd, &rm, &rv, x, gamma, beta, Int64(n), Int64(c), Int64(hw), 1e-5, 0.1, 1)
            var y = [Float](repeating: .nan, count: dz.count), index = [UInt8](repeating: 0, count: dz.count)
            #expect(bp_maxpool2d_forward(&y, &index, nil, u, &p) == 0)
            var du = [Float](repeating: .nan, count: x.count)
            #expect(bp_maxpool2d_backward(&du, dz, index, nil, &p) == 0)
            var dx = x, dg = [Float](repeating: 0, count: c), db = dg
            dx.withUnsafeMutableBufferPointer { d in
                _ = bp_batchnorm_backward(
                    d.baseAddress, &dg, &db, du, d.baseAddress, mean, rstd, gamma, beta, Int64(n), Int64(c), Int64(hw),
                    1, 1)
            }
            #expect(u.contains(0) && u.contains { $0 > 0 }, "the ReLU cuts some units")
            return [
                bits(y), index.map(UInt32.init), bits(mean), bits(rstd), bits(rm), bits(rv), bits(dx), bits(dg),
                bits(db),
            ]
        }
        func fused() -> [[UInt32]] {
            var y = [Float](repeating: .nan, count: dz.count), index = [UInt8](repeating: 0, count: dz.count)
            var mean = [Float](repeating: 0, count: 2 * c), rstd = [Float](repeating: 0, count: c), rm = rstd,
                rv = [Float](repeating: 1, count: c)
            #expect(
                bp_batchnorm_relu_maxpool_forward_train(
                    &y, &index, &mean, &rstd, &rm, &rv, x, gamma, beta, &p, 1e-5, 0.1)
                    == 0)
            var dx = x, dg = [Float](repeating: 0, count: c), db = dg
            let missing = dx.withUnsafeMutableBufferPointer { d in
                bp_batchnorm_relu_maxpool_backward(
                    d.baseAddress, &dg, &db, dz, index, d.baseAddress, mean, rstd, gamma, beta, &p)
            }
            #expect(missing == 0)
            return [
                bits(y), index.map(UInt32.init), bits(mean), bits(rstd), bits(rm), bits(rv), bits(dx), bits(dg),
                bits(db),
            ]
        }
        let expected = separate(), got = fused()
        for (name, (a, b)) in zip(
            ["y", "argmax", "mean", "rstd", "running mean", "running var", "dx", "dgamma", "dbeta"], zip(expected, got))
        {
            #expect(a == b, "\(name), \(n)x\(c)x\(h)x\(w) pooled by \(k)")
        }
        expectBitIdentical(fused)
    }

    @Test("normalization is bit-identical for 1, 2 and 3 threads")
    func threadInvariance() {
        let (n, c, hw) = (4, 24, 900)
        let x = Self.data(n * c * hw, seed: 1, offset: 3, spread: 2)
        var random = TestRandom(seed: 2)
        let dy = random.floats(x.count), gamma = random.floats(c), beta = random.floats(c)
        let (rows, d) = (n * c, hw)
        let lnGamma = random.floats(d), lnBeta = random.floats(d)
        func run() -> [[UInt32]] {
            var y = x, mean = [Float](repeating: 0, count: 2 * c), rstd = [Float](repeating: 0, count: c), rm = rstd,
                rv = rstd
            bp_batchnorm_forward_train(
                &y, &mean, &rstd, &rm, &rv, x, gamma, beta, Int64(n), Int64(c), Int64(hw), 1e-5, 0.1, 0)
            var dx = x, dg = [Float](repeating: 0, count: c), db = dg
            bp_batchnorm_backward(&dx, &dg, &db, dy, x, mean, rstd, gamma, beta, Int64(n), Int64(c), Int64(hw), 1, 0)
            var ly = x, lm = [Float](repeating: 0, count: 2 * rows), lr = [Float](repeating: 0, count: rows)
            bp_layernorm_forward(&ly, &lm, &lr, x, lnGamma, lnBeta, Int64(rows), Int64(d), 1e-5)
            var ldx = x, ldg = [Float](repeating: 0, count: d), ldb = ldg
            bp_layernorm_backward(&ldx, &ldg, &ldb, dy, x, lm, lr, lnGamma, Int64(rows), Int64(d))
            return [
                bits(y), bits(mean), bits(rstd), bits(rm), bits(rv), bits(dx), bits(dg), bits(db),
                bits(ly), bits(ldx), bits(ldg), bits(ldb),
            ]
        }
        expectBitIdentical(run)
    }
}
