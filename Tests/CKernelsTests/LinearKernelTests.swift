import BackpropTestSupport
import CKernels
import Testing

@Suite struct LinearKernelTests {
    static let shapes: [(rows: Int, inFeatures: Int, outFeatures: Int)] = [
        (1, 1, 1), (1, 5, 3), (7, 1, 4), (5, 7, 3), (33, 65, 17), (128, 100, 10),
    ]

    @Test(
        "forward, backward-data and backward-weights match the references",
        arguments: shapes, [true, false])
    func matchesReference(_ shape: (rows: Int, inFeatures: Int, outFeatures: Int), bias: Bool) {
        let (rows, inF, outF) = (Int64(shape.rows), Int64(shape.inFeatures), Int64(shape.outFeatures))
        var random = TestRandom(seed: UInt64(shape.rows * 7 + shape.inFeatures))
        let x = random.floats(shape.rows * shape.inFeatures)
        let w = random.floats(shape.outFeatures * shape.inFeatures)
        let b = random.floats(shape.outFeatures)
        let dy = random.floats(shape.rows * shape.outFeatures)
        let label = "rows=\(rows) in=\(inF) out=\(outF) bias=\(bias)"

        var y = [Float](repeating: 0, count: dy.count), yRef = y
        b.withUnsafeBufferPointer { bp in
            let bias = bias ? bp.baseAddress : nil
            _ = bp_linear_forward(&y, x, w, bias, rows, inF, outF, Int32(BP_FP32))
            bp_linear_forward_ref(&yRef, x, w, bias, rows, inF, outF)
        }
        #expect(relativeError(y, yRef) < 1e-5, "forward \(label)")

        var dx = [Float](repeating: 0, count: x.count), dxRef = dx
        _ = bp_linear_backward_data(&dx, dy, w, rows, inF, outF, Int32(BP_FP32))
        bp_linear_backward_data_ref(&dxRef, dy, w, rows, inF, outF)
        #expect(relativeError(dx, dxRef) < 1e-5, "backward-data \(label)")

        // Gradients accumulate: start from non-zero values.
        var dw = random.floats(w.count), dwRef = dw
        var db = random.floats(b.count), dbRef = db
        if bias {
            _ = bp_linear_backward_weights(&dw, &db, dy, x, rows, inF, outF, Int32(BP_FP32))
            bp_linear_backward_weights_ref(&dwRef, &dbRef, dy, x, rows, inF, outF)
            #expect(relativeError(db, dbRef) < 1e-5, "backward-bias \(label)")
        } else {
            _ = bp_linear_backward_weights(&dw, nil, dy, x, rows, inF, outF, Int32(BP_FP32))
            bp_linear_backward_weights_ref(&dwRef, nil, dy, x, rows, inF, outF)
        }
        #expect(relativeError(dw, dwRef) < 1e-5, "backward-weights \(label)")
    }
}
