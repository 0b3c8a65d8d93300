/// Each image row as one time step: x [N, C, H, W] → u [N, H, C · W], u[n, h, c · W + w] =
/// x[n, c, h, w] (the model spec's `rows`, for reading images with a recurrent layer). Its backward
/// puts the gradient back in place.
public final class Rows: Module {
    public var isTraining = true

    public init() {}

    public var description: String { "Rows()" }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        try checkImageInput(input.shape, self)
        let (n, c, h, w) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        // Element (n, c, h, w) of the image is element (n, h, c, w) of the rows: one permutation both
        // ways, a run of w floats at a time (with one channel, the same order: the scalars as they are).
        func move(_ from: Tensor, toRows: Bool) -> [Float] {
            if c == 1 { return from.scalars }
            return from.withPointer { source in
                uninitializedArray(from.count) { out in
                    for b in 0..<n {
                        for ch in 0..<c {
                            for row in 0..<h {
                                let image = ((b * c + ch) * h + row) * w, rows = ((b * h + row) * c + ch) * w
                                if toRows {
                                    (out + rows).update(from: source + image, count: w)
                                } else {
                                    (out + image).update(from: source + rows, count: w)
                                }
                            }
                        }
                    }
                }
            }
        }
        let output = Tensor(unchecked: [n, h, c * w], scalars: move(input, toRows: true))
        return (
            output,
            { gradOutput in
                try checkGradient(gradOutput, matches: output.shape, in: self)
                return Tensor(unchecked: input.shape, scalars: move(gradOutput, toRows: false))
            }
        )
    }
}

/// The last time step of a sequence: x [N, T, F] → u [N, F] = x[:, T − 1, :] (the model spec's
/// `last`). Its backward puts the gradient at the last step and zeros elsewhere.
public final class LastStep: Module {
    public var isTraining = true

    public init() {}

    public var description: String { "LastStep()" }

    public func forward(_ input: Tensor) throws -> (output: Tensor, backward: Backward) {
        guard input.rank == 3, input.shape.allSatisfy({ $0 > 0 }) else {
            throw BackpropError(.shapeMismatch, "\(self): input has shape \(describe(input.shape)), expected [N, T, F]")
        }
        let (n, t, f) = (input.shape[0], input.shape[1], input.shape[2])
        let out = input.withPointer { x in
            uninitializedArray(n * f) { u in
                for b in 0..<n { (u + b * f).update(from: x + (b * t + t - 1) * f, count: f) }
            }
        }
        let output = Tensor(unchecked: [n, f], scalars: out)
        return (
            output,
            { gradOutput in
                try checkGradient(gradOutput, matches: output.shape, in: self)
                var dx = [Float](repeating: 0, count: input.count)
                gradOutput.withPointer { g in
                    dx.withUnsafeMutableBufferPointer { d in
                        for b in 0..<n {
                            (d.baseAddress! + (b * t + t - 1) * f).update(from: g + b * f, count: f)
                        }
                    }
                }
                return Tensor(unchecked: input.shape, scalars: dx)
            }
        )
    }
}
