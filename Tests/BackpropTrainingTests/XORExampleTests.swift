import BackpropTestSupport
import BackpropTraining
import Testing

@Suite struct XORExampleTests {
    @Test func xorIsLearnedToFullAccuracy() throws {
        let result = try XORExample.train()
        #expect(result.accuracy == 1, "predictions \(result.predictions)")
        #expect(result.loss < 0.01)
    }
}
