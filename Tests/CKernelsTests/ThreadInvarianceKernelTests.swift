import BackpropTestSupport
import CKernels
import Testing

/// Every kernel gives the same bits with 1 and 3 threads, on sizes above the parallel threshold.
/// (The thread count is per calling thread in OpenMP, so other suites running meanwhile do not
/// change it.)
@Suite(.serialized) struct ThreadInvarianceKernelTests {
    @Test("kernels are bit-identical for 1 and 3 threads")
    func bitIdentical() {
        var random = TestRandom(seed: 5)
        let (rows, inF, outF) = (300, 257, 129)
        let x = random.floats(rows * inF), w = random.floats(outF * inF), b = random.floats(outF)
        let dy = random.floats(rows * outF)
        let labels = (0..<rows).map { Int64($0 % outF) }

        // Outputs: linear y, dx, dweight, dbias; softmax cross-entropy dx; mse dx; gelu; the losses.
        func run() -> [[UInt32]] {
            var y = [Float](repeating: 0, count: rows * outF), dx = [Float](repeating: 0, count: rows * inF)
            var dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: b.count)
            _ = bp_linear_forward(&y, x, w, b, Int64(rows), Int64(inF), Int64(outF), Int32(BP_FP32))
            _ = bp_linear_backward_data(&dx, dy, w, Int64(rows), Int64(inF), Int64(outF), Int32(BP_FP32))
            _ = bp_linear_backward_weights(&dw, &db, dy, x, Int64(rows), Int64(inF), Int64(outF), Int32(BP_FP32))
            var dl = [Float](repeating: 0, count: y.count), dm = dl, stats = [Float](repeating: 0, count: 2 * rows)
            let xent = bp_softmax_xent_forward(&stats, y, labels, Int64(rows), Int64(outF))
            bp_softmax_xent_backward(&dl, stats, y, labels, Int64(rows), Int64(outF), 1 / Float(rows))
            let mse = bp_mse(&dm, y, dy, Int64(y.count))
            var act = [Float](repeating: 0, count: x.count)
            bp_gelu_forward(&act, x, Int64(x.count))
            return [
                bits(y), bits(dx), bits(dw), bits(db), bits(dl), bits(dm), bits(act),
                [UInt32(truncatingIfNeeded: xent.bitPattern), UInt32(truncatingIfNeeded: mse.bitPattern)],
            ]
        }
        expectBitIdentical(threads: [3], run)
    }
}
