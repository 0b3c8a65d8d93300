/// Calls `body` with mutable pointers to two arrays, or nils when `present` is false
/// (optional gradient outputs such as dgamma and dbeta).
func withOptionalPair<R>(
    _ present: Bool, _ a: inout [Float], _ b: inout [Float],
    _ body: (UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?) -> R
) -> R {
    guard present else { return body(nil, nil) }
    return a.withUnsafeMutableBufferPointer { pa in
        b.withUnsafeMutableBufferPointer { pb in body(pa.baseAddress, pb.baseAddress) }
    }
}
