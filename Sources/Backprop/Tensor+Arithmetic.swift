import CKernels

extension Tensor {
    /// self + other, elementwise; the shapes must be equal (checked by the caller).
    package func adding(_ other: Tensor) -> Tensor {
        precondition(shape == other.shape, "adding tensors of shapes \(shape) and \(other.shape)")
        return withPointer { a in
            other.withPointer { b in Tensor.filled(shape) { bp_add($0, a, b, Int64(count)) } }
        }
    }

    /// self += other, elementwise; the shapes must be equal (checked by the caller).
    mutating func add(_ other: Tensor) {
        precondition(shape == other.shape, "adding tensors of shapes \(shape) and \(other.shape)")
        let n = Int64(count)
        other.withPointer { x in withMutablePointer { bp_add_inplace($0, x, n) } }
    }
}
