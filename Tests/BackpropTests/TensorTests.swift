import Backprop
import BackpropTestSupport
import Testing

@Suite struct TensorTests {
    @Test func shapeAndScalars() throws {
        let t = try Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        #expect(t.count == 6 && t.rank == 2 && t[4] == 5)
        let r = try t.reshaped(to: [3, 2])
        #expect(r.shape == [3, 2] && r.scalars == t.scalars)
        #expect(try Tensor(shape: [0, 4], repeating: 1).count == 0)
    }

    @Test func badShapesThrow() {
        expectError(.shapeMismatch, mentioning: ["5 scalars", "[2, 3]", "expected 6"]) {
            _ = try Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5])
        }
        expectError(.invalidArgument, mentioning: ["[2, -1]", "negative"]) { _ = try Tensor(shape: [2, -1]) }
        expectError(.shapeMismatch, mentioning: ["[4]"]) { _ = try Tensor([1, 2, 3]).reshaped(to: [4]) }
        expectError(.invalidArgument, mentioning: ["more elements than Int can count"]) {
            _ = try Tensor(shape: [Int.max, 2], scalars: [])
        }
    }

    /// Every position of 37 values (a vector's tail included) holding each non-finite value in
    /// turn; the largest and the smallest floats are finite.
    @Test func isFiniteFindsEveryInfinityAndNaN() {
        let finite = (0..<37).map { Float($0) - 18.5 }
        #expect(Tensor(finite).isFinite)
        #expect(Tensor([Float.greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNonzeroMagnitude]).isFinite)
        #expect(Tensor([Float]()).isFinite)
        for bad in [Float.infinity, -.infinity, .nan, -.nan, .signalingNaN] {
            for index in finite.indices {
                var values = finite
                values[index] = bad
                #expect(!Tensor(values).isFinite, "\(bad) at \(index)")
            }
        }
    }
}
