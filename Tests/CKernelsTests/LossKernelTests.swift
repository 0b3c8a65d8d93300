import BackpropTestSupport
import CKernels
import Foundation
import Testing

@Suite struct LossKernelTests {
    @Test(
        "softmax cross-entropy matches the double-precision reference",
        arguments: [(1, 1), (1, 5), (6, 5), (33, 10), (1024, 1000)])
    func softmaxCrossEntropy(rows: Int, classes: Int) {
        var random = TestRandom(seed: UInt64(rows * classes))
        let logits = random.floats(rows * classes, -5, 5)
        let labels = (0..<rows).map { Int64($0 * 7 % classes) }
        var dx = [Float](repeating: .nan, count: logits.count), dxRef = dx
        var stats = [Float](repeating: .nan, count: 2 * rows)
        let loss = bp_softmax_xent_forward(&stats, logits, labels, Int64(rows), Int64(classes))
        bp_softmax_xent_backward(&dx, stats, logits, labels, Int64(rows), Int64(classes), 1 / Float(rows))
        let lossRef = bp_softmax_xent_ref(&dxRef, logits, labels, Int64(rows), Int64(classes))
        #expect(abs(loss - lossRef) <= 1e-6 * max(1, lossRef), "rows=\(rows) classes=\(classes)")
        #expect(relativeError(dx, dxRef) < 1e-6, "rows=\(rows) classes=\(classes)")
    }

    /// Each row's Σ e^(x − max) is summed in one stated order, whatever vector width the CPU's
    /// clone of the kernel has (16 lanes, lane l over the classes j ≡ l mod 16 in order, then the
    /// lanes in order, then the last classes), so that an AVX2 and an AVX-512 machine give the
    /// same bits: the row's 1 / Σ (stats[1]) is exactly that sum's, from the same exponentials.
    @Test("softmax's sum of exponentials has one order on every CPU", arguments: [10, 16, 96, 1000, 1003])
    func softmaxSumOrder(classes: Int) {
        let rows = 3
        var random = TestRandom(seed: UInt64(classes))
        let logits = random.floats(rows * classes, -8, 8)
        var stats = [Float](repeating: .nan, count: 2 * rows)
        _ = bp_softmax_xent_forward(&stats, logits, [Int64](repeating: 0, count: rows), Int64(rows), Int64(classes))
        for r in 0..<rows {
            let row = Array(logits[r * classes..<(r + 1) * classes])
            let max = row.max()!
            var e = [Float](repeating: 0, count: classes)
            bp_exp_for_testing(&e, row.map { $0 - max }, Int64(classes))
            var lanes = [Float](repeating: 0, count: 16), j = 0
            while j + 16 <= classes {
                for l in 0..<16 { lanes[l] += e[j + l] }
                j += 16
            }
            var sum: Float = 0
            for l in 0..<16 { sum += lanes[l] }
            for k in j..<classes { sum += e[k] }
            #expect(stats[2 * r] == max)
            #expect(stats[2 * r + 1].bitPattern == (1 / sum).bitPattern, "row \(r) of \(classes) classes")
        }
    }

    /// bp_expf against exp in double over the whole range the kernels use.
    @Test("the vectorisable exp is within 2 ulp")
    func expAccuracy() {
        var x: Float = -87
        while x < 88 {
            var y: Float = 0
            bp_exp_for_testing(&y, [x], 1)
            let exact = Foundation.exp(Double(x))
            #expect(abs(Double(y) - exact) <= 2 * Double(Float(exact).ulp), "exp(\(x))")
            x += 0.0137
        }
    }

    @Test("softmax cross-entropy is stable for logits of 1e4")
    func softmaxCrossEntropyLargeLogits() {
        // Row 0: logits 1e4 and 1e4 - 2 with label 1: loss = log(1 + e^2) - 0 + ... = log(e^0 + e^-2) + 2.
        let logits: [Float] = [10_000, 9_998, -10_000, 10_000]
        var dx = [Float](repeating: .nan, count: 4), stats = dx
        let loss = bp_softmax_xent_forward(&stats, logits, [1, 0], 2, 2)
        bp_softmax_xent_backward(&dx, stats, logits, [1, 0], 2, 2, 0.5)
        let row0 = log(1 + exp(-2.0)) + 2, row1 = log(1 + exp(-20_000.0)) + 20_000
        #expect(abs(loss - (row0 + row1) / 2) < 1e-3)
        #expect(dx.allSatisfy { $0.isFinite })
    }

    /// Elementwise losses against their mean formulas in double; loss and gradient.
    @Test("mse, bce and bce-with-logits match their formulas", arguments: [1, 12, 50_001])
    func pointwiseLosses(count: Int) {
        var random = TestRandom(seed: UInt64(count))
        let logits = random.floats(count, -6, 6)
        let probabilities = random.floats(count, 0.01, 0.99)
        let target = random.floats(count, 0, 1)
        let n = Double(count)
        var dx = [Float](repeating: .nan, count: count)

        let mse = bp_mse(&dx, logits, target, Int64(count))
        let mseRef = zip(logits, target).map { pow(Double($0) - Double($1), 2) }.reduce(0, +) / n
        #expect(abs(mse - mseRef) <= 1e-6 * max(1, mseRef))
        for i in 0..<count {
            #expect(abs(Double(dx[i]) - 2 * (Double(logits[i]) - Double(target[i])) / n) <= 1e-6 / n * 10)
        }

        let bce = bp_bce(&dx, probabilities, target, Int64(count))
        var bceRef = 0.0
        for i in 0..<count {
            let (x, t) = (Double(probabilities[i]), Double(target[i]))
            bceRef -= t * log(x) + (1 - t) * log(1 - x)
            let expected = (x - t) / (x * (1 - x)) / n
            #expect(abs(Double(dx[i]) - expected) <= 1e-5 * max(abs(expected), 1 / n))
        }
        #expect(abs(bce - bceRef / n) <= 1e-6 * max(1, bceRef / n))

        let bceLogits = bp_bce_logits(&dx, logits, target, Int64(count))
        var bceLogitsRef = 0.0
        for i in 0..<count {
            let (x, t) = (Double(logits[i]), Double(target[i]))
            let s = 1 / (1 + exp(-x))
            bceLogitsRef -= t * log(s) + (1 - t) * log(1 - s)
            #expect(abs(Double(dx[i]) - (s - t) / n) <= 1e-6 / n * 10)
        }
        #expect(abs(bceLogits - bceLogitsRef / n) <= 1e-6 * max(1, bceLogitsRef / n))
    }

    @Test("bce clamps log(0) at -100 as PyTorch does")
    func bceClamp() {
        var dx: [Float] = [0, 0]
        let loss = bp_bce(&dx, [0, 1], [1, 0], 2)
        #expect(loss == 100)
        #expect(dx.allSatisfy { $0.isFinite })
    }
}
