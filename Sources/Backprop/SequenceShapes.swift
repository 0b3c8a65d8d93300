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
        // Element (n, c, h, w) of the image is element (n, h, c, w) of the rows: one permutation both ways.
        func move(_ from: Tensor, toRows: Bool) -> [Float] {
            var out = [Float](repeating: 0, count: from.count)
            for b in 0..<n {
                for ch in 0..<c {
                    for row in 0..<h {
                        let image = ((b * c + ch) * h + row) * w, rows = ((b * h + row) * c + ch) * w
                        for col in 0..<w {
                            if toRows {
                                out[rows + col] = from[image + col]
                            } else {
                                out[image + col] = from[rows + col]
                            }
                        }
                    }
                }
            }
            return out
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
        var out = [Float](repeating: 0, count: n * f)
        for b in 0..<n {
            for j in 0..<f { out[b * f + j] = input[(b * t + t - 1) * f + j] }
        }
        let output = Tensor(unchecked: [n, f], scalars: out)
        return (
            output,
            { gradOutput in
                try checkGradient(gradOutput, matches: output.shape, in: self)
                var dx = [Float](repeating: 0, count: input.count)
                for b in 0..<n {
                    for j in 0..<f { dx[(b * t + t - 1) * f + j] = gradOutput[b * f + j] }
                }
                return Tensor(unchecked: input.shape, scalars: dx)
            }
        )
    }
}
