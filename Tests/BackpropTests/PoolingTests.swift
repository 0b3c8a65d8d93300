import Backprop
import BackpropTestSupport
import Testing

@Suite struct PoolingTests {
    /// Distinct values (no ties), so finite differences never cross a kink of max pooling.
    static func distinctInput(_ shape: [Int], seed: UInt64) -> Tensor {
        let count = shape.reduce(1, *)
        var generator = SplitMix64(seed: seed)
        let values = (0..<count).map { Float($0) * 0.37 - Float(count) * 0.1 }.shuffled(using: &generator)
        return try! Tensor(shape: shape, scalars: values)
    }

    @Test func gradientChecksAwayFromTies() throws {
        let x = Self.distinctInput([2, 2, 7, 6], seed: 1)
        let modules: [Module] = [
            try MaxPool2D(kernelSize: 2), try MaxPool2D(kernelSize: 3, stride: 2, padding: 1, ceilMode: true),
            try MaxPool2D(kernelSize: Size2D(3, 2), stride: Size2D(1, 2), dilation: Size2D(2, 1)),
            try AvgPool2D(kernelSize: 3, stride: 2, padding: 1),
            try AvgPool2D(kernelSize: 3, stride: 1, padding: 1, countIncludePad: false),
            try AvgPool2D(kernelSize: 2, divisorOverride: 3),
            try AdaptiveAvgPool2D(outputSize: Size2D(3, 4)), try AdaptiveMaxPool2D(outputSize: Size2D(4, 3)),
            GlobalAvgPool2D(),
        ]
        for module in modules {
            let report = try GradientCheck.run(module, input: x, epsilon: 1e-2)
            #expect(report.passed, "\(report)")
        }
    }

    /// PyTorch: MaxPool2d(2, stride=2, ceil_mode=True) on 5x7 gives 3x4. With kernel 2, stride 2,
    /// pad 1 on 5x5, ceil gives ⌈(5 + 2 − 2) / 2⌉ + 1 = 4, but a 4th window would start at row
    /// 3 · 2 − 1 = 5, inside the bottom padding, so it is dropped: 3x3.
    @Test func outputSizesAsPyTorch() throws {
        #expect(try MaxPool2D(kernelSize: 2, ceilMode: true)(Tensor(shape: [1, 1, 5, 7])).shape == [1, 1, 3, 4])
        #expect(try MaxPool2D(kernelSize: 2)(Tensor(shape: [1, 1, 5, 7])).shape == [1, 1, 2, 3])
        #expect(
            try MaxPool2D(kernelSize: 2, stride: 2, padding: 1, ceilMode: true)(Tensor(shape: [1, 1, 5, 5])).shape == [
                1, 1, 3, 3,
            ])
        #expect(
            try MaxPool2D(kernelSize: 3, stride: 2, padding: 1, ceilMode: true)(Tensor(shape: [1, 1, 6, 6])).shape == [
                1, 1, 4, 4,
            ])
        #expect(try GlobalAvgPool2D()(Tensor(shape: [2, 5, 3, 3])).shape == [2, 5, 1, 1])
    }

    @Test func indicesAndUnpoolRoundTrip() throws {
        let pool = try MaxPool2D(kernelSize: 2)
        let x = Self.distinctInput([1, 2, 4, 4], seed: 3)
        let (y, indices, _) = try pool.forwardWithIndices(x)
        let unpool = try MaxUnpool2D(kernelSize: 2)
        let (restored, backward) = try unpool.forward(y, indices: indices)
        #expect(restored.shape == x.shape)
        // Each window keeps its maximum in place and zeros elsewhere: pooling it again gives y.
        #expect(try pool(restored) == y)
        #expect(try backward(x).shape == y.shape)
        expectError(.invalidArgument, mentioning: ["MaxUnpool2D", "index 99"]) {
            _ = try unpool.forward(y, indices: [99] + indices.dropFirst())
        }
    }

    @Test func badInputThrows() throws {
        expectError(.invalidArgument, mentioning: ["MaxPool2D", "kernel size must be positive"]) {
            _ = try MaxPool2D(kernelSize: 0)
        }
        expectError(.invalidArgument, mentioning: ["stride must be positive"]) {
            _ = try AvgPool2D(kernelSize: 2, stride: 0)
        }
        expectError(.invalidArgument, mentioning: ["padding must be between 0 and half the kernel"]) {
            _ = try MaxPool2D(kernelSize: 3, padding: 2)
        }
        expectError(.invalidArgument, mentioning: ["AdaptiveAvgPool2D", "output size must be positive", "0x2"]) {
            _ = try AdaptiveAvgPool2D(outputSize: Size2D(0, 2))
        }
        expectError(.shapeMismatch, mentioning: ["MaxPool2D(kernel: 2x2", "[3, 4, 4]", "expected [N, C, H, W]"]) {
            _ = try MaxPool2D(kernelSize: 2)(Tensor(shape: [3, 4, 4]))
        }
        expectError(.shapeMismatch, mentioning: ["gives an output of size 0x"]) {
            _ = try MaxPool2D(kernelSize: 3)(Tensor(shape: [1, 1, 2, 5]))
        }
        expectError(
            .invalidArgument, mentioning: ["AvgPool2D(kernel: 3x3)", "padding 'same' is only for convolutions"]
        ) {
            _ = try AvgPool2D(kernelSize: 3, padding: .same)
        }
        expectError(.invalidArgument, mentioning: ["MaxUnpool2D", "needs the indices"]) {
            _ = try MaxUnpool2D(kernelSize: 2).forward(Tensor(shape: [1, 1, 2, 2]))
        }
    }

    /// Worked by hand: plane 0 of x [1, 2, 1, 2] = [1, 2] to indices [3, 0] of a 2x2 plane, plane 1
    /// = [5, 7] to [1, 1] (repeated: the last wins); the backward gathers v at the same places.
    @Test func unpoolByHand() throws {
        let unpool = try MaxUnpool2D(kernelSize: Size2D(2, 1))
        let x = try Tensor(shape: [1, 2, 1, 2], scalars: [1, 2, 5, 7])
        let (y, backward) = try unpool.forward(x, indices: [3, 0, 1, 1])
        #expect(y.shape == [1, 2, 2, 2])
        #expect(y.scalars == [2, 0, 0, 1, 0, 7, 0, 0])
        let v = try Tensor(shape: [1, 2, 2, 2], scalars: [10, 11, 12, 13, 14, 15, 16, 17])
        #expect(try backward(v).scalars == [13, 10, 15, 15])
    }

    /// With distinct indices (windows that do not overlap) the backward is the adjoint of the
    /// forward: <unpool(x), v> = <x, B(v)>; here into an explicit output size, as the pooled 4x5
    /// planes' last column has no window.
    @Test func unpoolBackwardIsTheAdjoint() throws {
        let x = randomTensor([2, 3, 4, 5], seed: 4)
        let (y, indices, _) = try MaxPool2D(kernelSize: 2).forwardWithIndices(x)
        #expect(Set(indices.enumerated().map { [$0.offset / 4, $0.element] }).count == indices.count)
        let (u, backward) = try MaxUnpool2D(kernelSize: 2).forward(y, indices: indices, outputSize: Size2D(4, 5))
        let v = randomTensor(u.shape, seed: 5), dx = try backward(v)
        let left = zip(u.scalars, v.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let right = zip(y.scalars, dx.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        #expect(abs(left - right) <= 1e-9 * max(abs(left), 1))
    }

    /// One window as wide as a 100,001-column row: the backward's layout groups the taps by phase
    /// in time linear in the width (it once took the width squared: minutes).
    @Test func aVeryWideWindow() throws {
        let width = 100_001
        let pool = try MaxPool2D(kernelSize: Size2D(1, width), stride: Size2D(1, width))
        let x = randomTensor([1, 1, 1, width], seed: 31)
        let (y, backward) = try pool.forward(x)
        let top = x.scalars.indices.max { x.scalars[$0] < x.scalars[$1] }!
        #expect(y.shape == [1, 1, 1, 1] && y.scalars == [x.scalars[top]])
        let dx = try backward(try Tensor(shape: [1, 1, 1, 1], scalars: [2]))
        #expect(dx.scalars[top] == 2 && dx.scalars.reduce(0, +) == 2)
    }
}
