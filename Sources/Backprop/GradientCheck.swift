import Foundation

/// Checks a module's backward function B[g, z] and its parameter gradients against central
/// finite differences.
///
/// With a fixed random v of the output's shape, J(z) = Σ g(z) · v is a scalar whose gradient is
/// exactly B[g, z](v) (and, for each parameter θ, the gradient the backward adds into θ.grad).
/// For each checked element, J is evaluated (summed in double) at ±ε, and the central difference
/// is compared with the analytic value: the error is |a − n| / max(|a|, |n|, 1).
/// Points at a kink (ReLU at 0, a max-pool tie), where the one-sided differences disagree,
/// are skipped and counted.
public enum GradientCheck {
    /// The outcome for one tensor (the input or a parameter).
    public struct Entry: Sendable, CustomStringConvertible {
        public let name: String
        public let checked: Int
        public let skippedAtKinks: Int
        public let maxError: Double
        /// The element with the largest error, with its analytic and numeric derivatives.
        public let worstIndex: Int
        public let worstAnalytic: Double
        public let worstNumeric: Double
        public let tolerance: Double

        public var passed: Bool { checked > 0 && maxError <= tolerance }

        public var description: String {
            let verdict = passed ? "ok  " : "FAIL"
            return "\(verdict) \(name): \(checked) checked, \(skippedAtKinks) skipped at kinks, max error "
                + "\(maxError.formatted3) (tolerance \(tolerance.formatted3))"
                + (checked > 0
                    ? ", worst at [\(worstIndex)]: analytic \(worstAnalytic.formatted3), numeric \(worstNumeric.formatted3)"
                    : "")
        }
    }

    /// Every tensor's entry; printable.
    public struct Report: Sendable, CustomStringConvertible {
        public let module: String
        public let entries: [Entry]

        public var passed: Bool { entries.allSatisfy(\.passed) }

        public var description: String {
            "Gradient check of \(module): \(passed ? "passed" : "FAILED")\n"
                + entries.map { "  \($0)" }.joined(separator: "\n")
        }
    }

    /// Runs the check on `module` at `input`, in the module's current mode. The module must be
    /// deterministic: two forwards of the same input give the same output.
    ///
    /// - Parameters:
    ///   - epsilon: the finite-difference step.
    ///   - tolerance: the largest accepted error relative to max(|a|, |n|, 1).
    ///   - maxChecksPerTensor: larger tensors are checked at this many evenly spaced elements.
    ///   - seed: draws v.
    ///   - checkInput: false for an input that is not differentiable (an embedding's indices): only
    ///     the parameters are checked.
    public static func run(
        _ module: Module, input: Tensor, epsilon: Float = 1e-3, tolerance: Double = 1e-2,
        maxChecksPerTensor: Int = 200, seed: UInt64 = 0, checkInput: Bool = true
    ) throws -> Report {
        module.zeroGrad()
        let (output, backward) = try module.forward(input)
        var generator = SplitMix64(seed: seed)
        let v = try Tensor.uniform(shape: output.shape, low: -1, high: 1, using: &generator)
        let inputGradient = try backward(v)
        let objective = { (z: Tensor) throws -> Double in
            let u = try module(z)
            var sum = 0.0
            for i in 0..<u.count { sum += Double(u[i]) * Double(v[i]) }
            return sum
        }
        let base = try objective(input)
        let settings = Settings(epsilon: epsilon, tolerance: tolerance, maxChecks: maxChecksPerTensor, base: base)

        var entries =
            checkInput
            ? [try settings.compare(name: "input", analytic: inputGradient, at: input) { try objective($0) }] : []
        for (name, parameter) in module.namedParameters {
            let original = parameter.value
            defer { parameter.value = original }
            entries.append(
                try settings.compare(name: name, analytic: parameter.grad, at: original) { value in
                    parameter.value = value
                    return try objective(input)
                })
        }
        module.zeroGrad()
        return Report(module: module.description, entries: entries)
    }

    private struct Settings {
        let epsilon: Float
        let tolerance: Double
        let maxChecks: Int
        let base: Double

        /// Compares `analytic` with central differences of `objective` around `point`.
        func compare(
            name: String, analytic: Tensor, at point: Tensor,
            objective: (Tensor) throws -> Double
        ) throws -> Entry {
            let count = point.count
            let indices = count <= maxChecks ? Array(0..<count) : (0..<maxChecks).map { $0 * count / maxChecks }
            var checked = 0, skipped = 0, maxError = 0.0
            var worst = (index: 0, analytic: 0.0, numeric: 0.0)
            var probe = point
            for index in indices {
                let x = point[index]
                let (up, down) = (x + epsilon, x - epsilon)
                probe[index] = up
                let plus = try objective(probe)
                probe[index] = down
                let minus = try objective(probe)
                probe[index] = x
                // Steps as actually representable in float32.
                let (hUp, hDown) = (Double(up) - Double(x), Double(x) - Double(down))
                let forward = (plus - base) / hUp, backward = (base - minus) / hDown
                if abs(forward - backward) > tolerance * max(abs(forward), abs(backward), 1) {
                    skipped += 1
                    continue
                }
                let numeric = (plus - minus) / (hUp + hDown), a = Double(analytic[index])
                let error = abs(a - numeric) / max(abs(a), abs(numeric), 1)
                checked += 1
                if error >= maxError {
                    maxError = error
                    worst = (index, a, numeric)
                }
            }
            return Entry(
                name: name, checked: checked, skippedAtKinks: skipped, maxError: maxError,
                worstIndex: worst.index, worstAnalytic: worst.analytic, worstNumeric: worst.numeric,
                tolerance: tolerance)
        }
    }
}

extension Double {
    /// Three significant digits, for reports.
    package var formatted3: String { String(format: "%.3g", self) }
}
