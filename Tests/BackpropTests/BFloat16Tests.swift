import Backprop
import BackpropTestSupport
import CKernels
import Testing

/// The Swift bfloat16 type rounds as the C conversion (and PyTorch) does, one value or many.
@Suite struct BFloat16Tests {
    static let cases: [(value: Float, bits: UInt16)] = [
        (1, 0x3f80),
        (1 + 0x1p-8, 0x3f80),  // a tie: to the even neighbour, down
        (1 + 3 * 0x1p-8, 0x3f82),  // a tie: to the even neighbour, up
        (-2.5, 0xc020),
        (Float.infinity, 0x7f80), (-Float.infinity, 0xff80), (Float.nan, 0xffff),
        (Float.greatestFiniteMagnitude, 0x7f80),  // rounds up past the largest bfloat16
        (0x1p-133, 0x0001),  // the smallest bfloat16 denormal stays
    ]

    @Test(arguments: cases)
    func roundsToNearestEven(value: Float, bits: UInt16) {
        #expect(BFloat16(value).bitPattern == bits, "\(value)")
    }

    @Test func manyValuesRoundAsOneDoesAndComeBackExactly() {
        let values = randomTensor([1000], seed: 3, -1e3, 1e3).scalars + [0, -0.0, .nan, .infinity]
        let rounded = BFloat16.array(values)
        #expect(rounded.map(\.bitPattern) == values.map { BFloat16($0).bitPattern })
        var reference = [UInt16](repeating: 0, count: values.count)
        bp_bf16_from_float_ref(&reference, values, Int64(values.count))
        #expect(rounded.map(\.bitPattern) == reference)
        let back = BFloat16.floats(rounded)
        #expect(back.map(\.bitPattern) == rounded.map { UInt32($0.bitPattern) << 16 })
        #expect(BFloat16.array(back) == rounded)
        #expect(Float(BFloat16(0.75)) == 0.75 && "\(BFloat16(0.75))" == "0.75")
    }
}
