import Foundation

/// How a layer's weights are drawn, from fan-in = in_features (× kernel area) and
/// fan-out = out_features (× kernel area).
public enum WeightInitialization: Sendable {
    /// PyTorch's default for Linear and Conv: Kaiming-uniform with a = √5,
    /// i.e. U(-1/√fan_in, 1/√fan_in).
    case pytorchDefault
    /// He (Kaiming) uniform for ReLU: U(-√(6/fan_in), √(6/fan_in)).
    case heUniform
    /// He (Kaiming) normal for ReLU: N(0, 2/fan_in).
    case heNormal
    /// Xavier/Glorot uniform: U(-√(6/(fan_in+fan_out)), √(6/(fan_in+fan_out))).
    case xavierUniform
    /// Xavier/Glorot normal: N(0, 2/(fan_in+fan_out)).
    case xavierNormal

    /// A weight tensor of `shape` drawn by this rule.
    public func weight<G: RandomNumberGenerator>(
        shape: [Int], fanIn: Int, fanOut: Int,
        using generator: inout G
    ) throws -> Tensor {
        let fanIn = Float(max(fanIn, 1)), fanOut = Float(max(fanOut, 1))
        switch self {
        case .pytorchDefault:
            let bound = 1 / fanIn.squareRoot()
            return try .uniform(shape: shape, low: -bound, high: bound, using: &generator)
        case .heUniform:
            let bound = (6 / fanIn).squareRoot()
            return try .uniform(shape: shape, low: -bound, high: bound, using: &generator)
        case .heNormal:
            return try .normal(shape: shape, std: (2 / fanIn).squareRoot(), using: &generator)
        case .xavierUniform:
            let bound = (6 / (fanIn + fanOut)).squareRoot()
            return try .uniform(shape: shape, low: -bound, high: bound, using: &generator)
        case .xavierNormal:
            return try .normal(shape: shape, std: (2 / (fanIn + fanOut)).squareRoot(), using: &generator)
        }
    }

    /// PyTorch's default bias: U(-1/√fan_in, 1/√fan_in), whatever the weight rule.
    static func bias<G: RandomNumberGenerator>(count: Int, fanIn: Int, using generator: inout G) throws -> Tensor {
        let bound = 1 / Float(max(fanIn, 1)).squareRoot()
        return try .uniform(shape: [count], low: -bound, high: bound, using: &generator)
    }
}
