/// A size per image axis, (height, width): kernels, strides, dilations, output sizes. An integer
/// literal gives both axes the same size: `kernelSize: 3` is 3x3.
public struct Size2D: Sendable, Equatable, ExpressibleByIntegerLiteral, CustomStringConvertible {
    public var height: Int
    public var width: Int

    public init(_ height: Int, _ width: Int) {
        (self.height, self.width) = (height, width)
    }

    /// The same size on both axes.
    public init(square size: Int) {
        self.init(size, size)
    }

    public init(integerLiteral value: Int) {
        self.init(value, value)
    }

    /// "3x3".
    public var description: String { "\(height)x\(width)" }

    /// Both sizes are > 0.
    var isPositive: Bool { height > 0 && width > 0 }
}

/// The padding of a convolution or pooling layer, per axis. An integer literal pads both axes alike:
/// `padding: 1` is `.explicit(1)`.
public enum Padding: Sendable, Equatable, ExpressibleByIntegerLiteral, CustomStringConvertible {
    /// The same number of zeros (for max pooling, −∞) on both sides of each axis.
    case explicit(Size2D)
    /// The output keeps the input's size (convolutions with stride 1 only, as PyTorch's "same"):
    /// dilation · (kernel − 1) zeros per axis, the odd one at the bottom or right.
    case same
    /// No padding (PyTorch's "valid").
    case valid

    public init(integerLiteral value: Int) {
        self = .explicit(Size2D(value, value))
    }

    public var description: String {
        switch self {
        case .explicit(let size): size.description
        case .same: "same"
        case .valid: "valid"
        }
    }

    /// (before, after) amounts on each axis for this kernel and dilation.
    func amounts(kernel: Size2D, dilation: Size2D) -> (top: Int, bottom: Int, left: Int, right: Int) {
        switch self {
        case .explicit(let size): return (size.height, size.height, size.width, size.width)
        case .valid: return (0, 0, 0, 0)
        case .same:
            let (h, w) = (dilation.height * (kernel.height - 1), dilation.width * (kernel.width - 1))
            return (h / 2, h - h / 2, w / 2, w - w / 2)
        }
    }

    /// The symmetric amounts of a layer that has no "same" padding (transposed convolutions,
    /// pooling), or a thrown error that `name` starts.
    func symmetric(_ name: String) throws -> Size2D {
        switch self {
        case .explicit(let size):
            guard size.height >= 0, size.width >= 0 else {
                throw BackpropError(.invalidArgument, "\(name): padding must be >= 0")
            }
            return size
        case .valid: return Size2D(0, 0)
        case .same:
            throw BackpropError(.invalidArgument, "\(name): padding 'same' is only for convolutions, as in PyTorch")
        }
    }
}

/// The checks that convolutions and pooling share: kernel, stride and dilation positive; errors
/// start with `name`.
func validateWindow(_ name: String, kernel: Size2D, stride: Size2D, dilation: Size2D) throws {
    guard kernel.isPositive else { throw BackpropError(.invalidArgument, "\(name): kernel size must be positive") }
    guard stride.isPositive else { throw BackpropError(.invalidArgument, "\(name): stride must be positive") }
    guard dilation.isPositive else { throw BackpropError(.invalidArgument, "\(name): dilation must be positive") }
}
