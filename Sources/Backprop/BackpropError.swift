/// The one error type Backprop throws. Its message names the module or file, what it got and
/// what it expected, e.g. `Linear(in: 3, out: 2): input has shape [4, 5], expected [*, 3]`.
public struct BackpropError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Sendable {
        /// An argument out of its range: a size of 0, a label past the class count, eps <= 0.
        case invalidArgument
        /// A tensor whose shape does not fit the module or the other tensors.
        case shapeMismatch
        /// A layer, operation or file feature the library does not implement.
        case unsupported
        /// A malformed, truncated or unreadable file or spec.
        case format
        /// A loss or gradient that became NaN or infinite.
        case numerical
        /// A kernel could not allocate its scratch memory.
        case outOfMemory
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

/// "[2, 3, 4]": how errors print shapes.
package func describe(_ shape: [Int]) -> String {
    "[" + shape.map(String.init).joined(separator: ", ") + "]"
}
