import Backprop
import BackpropTestSupport
import Testing

@Suite struct TensorMemoryTests {
    /// 1000 floats (4000 bytes) kept, 250 (1000 bytes) made and dropped, then a written copy of the
    /// first (its own 4000 bytes): peak 4000 + 4000, and 4000 still alive at the end.
    @Test func countsTensorsOfKnownSize() throws {
        let (kept, peak, live) = try TensorMemory.measure { () throws -> Tensor in
            let a = try Tensor(shape: [1000], repeating: 1)
            do { _ = try Tensor(shape: [250], repeating: 2) }
            var copy = a  // shares a's storage until written
            copy[0] = 5
            #expect(copy[0] == 5 && a[0] == 1)
            return a
        }
        #expect(kept.count == 1000)
        #expect(peak == 8000)
        #expect(live == 4000)
    }

    /// Checkpointing a deep stack in √depth segments keeps far less alive at the peak of a step:
    /// 64 layers that each keep their input (64 activations of 64 KB) against 8 segment inputs and
    /// one segment's 8 activations at a time.
    @Test func checkpointingLowersThePeak() throws {
        let spec = Array(repeating: "linear(64,64) relu", count: 32).joined(separator: " ")
        let x = randomTensor([256, 64], seed: 1)
        func peak(_ segments: Int?) throws -> Int {
            let model = try ModelSpec.build(spec, seed: 2)
            try model.checkpoint(segments: segments)
            return try TensorMemory.measure {
                let (y, backward) = try model.forward(x)
                _ = try backward(y)
            }.peakBytes
        }
        let (plain, checkpointed) = (try peak(nil), try peak(8))
        #expect(plain >= 64 * 65536, "each layer keeps its input")
        #expect(checkpointed * 3 <= plain, "peak \(checkpointed) bytes with 8 segments, \(plain) without")
    }

    /// Linear keeps its input for the weight gradient, Tanh its output for its derivative, Flatten
    /// nothing: each layer's figure is exactly that.
    @Test func whatEachBackwardHolds() throws {
        let model = try ModelSpec.build("flatten linear(16,8) tanh", seed: 1)
        let held = try model.memoryHeldByBackward(randomTensor([4, 2, 8], seed: 2))
        #expect(held.map(\.name) == ["0", "1", "2"])
        #expect(held[0].bytes == 0, "\(held)")  // only shapes
        #expect(held[1].bytes == 4 * 16 * 4, "\(held)")  // the flattened input [4, 16]
        #expect(held[2].bytes == 0, "\(held)")  // its output [4, 8] is the model's output
        // The convolution keeps its input [2, 1, 8, 8], ReLU its input [2, 4, 8, 8], max pooling a
        // byte per output [2, 4, 4, 4], Flatten nothing, Linear the flattened [2, 64].
        let cnn = try ModelSpec.build("conv2d(1,4,3,pad=1) relu maxpool2d(2) flatten linear(64,3)", seed: 3)
        let figures = try cnn.memoryHeldByBackward(randomTensor([2, 1, 8, 8], seed: 4))
        #expect(figures.map(\.bytes) == [512, 2048, 128, 0, 512], "\(figures)")
    }
}
