import Backprop
import BackpropTestSupport
import Testing

/// A network's forward, backward and optimizer step give the same bits with 1 and 3 threads.
@Suite(.serialized) struct ThreadInvarianceTests {
    static func trainStep(threads: Int) throws -> [[UInt32]] {
        let saved = Threads.count
        Threads.count = threads
        defer { Threads.count = saved }
        let model = try ModelSpec.build("flatten linear(784,300) relu linear(300,100) tanh linear(100,10)", seed: 1)
        let optimizer = try SGD(parameters: model.parameters, learningRate: 0.1, momentum: 0.9)
        let x = randomTensor([128, 1, 28, 28], seed: 2)
        let labels = (0..<128).map { $0 % 10 }
        var result: [[UInt32]] = []
        for _ in 0..<2 {
            optimizer.zeroGrad()
            let (logits, backward) = try model.forward(x)
            let loss = try SoftmaxCrossEntropy()(logits, labels: labels)
            let dx = try backward(loss.gradient)
            optimizer.step()
            result.append([loss.value.bitPattern])
            result.append(dx.scalars.map(\.bitPattern))
        }
        return result + model.parameters.map { $0.value.scalars.map(\.bitPattern) }
    }

    @Test func trainingStepsAreBitIdenticalFor1And3Threads() throws {
        let one = try Self.trainStep(threads: 1), three = try Self.trainStep(threads: 3)
        #expect(one.count == three.count)
        for (index, (a, b)) in zip(one, three).enumerated() {
            // The first differing element, not the arrays: a diff of 200k elements takes minutes.
            let difference = a.indices.first { a[$0] != b[$0] }
            #expect(difference == nil, "tensor \(index) differs at element \(difference ?? -1)")
        }
    }
}

/// OMP_NUM_THREADS values OpenMP cannot read are refused before it starts (the `backprop` command
/// exits with the message; libomp would run with garbage thread counts).
@Suite struct ThreadEnvironmentTests {
    @Test(arguments: ["abc", "-4", "0", "", "4,", "2.5", "99999999999"])
    func unreadableValuesAreNamed(value: String) throws {
        let problem = try #require(Threads.problem(withEnvironmentValue: value))
        #expect(problem.contains("OMP_NUM_THREADS=\(value) is not a thread count"))
    }

    @Test(arguments: ["1", "2", "8", "4,2", "65536"])
    func threadCountsPass(value: String) {
        #expect(Threads.problem(withEnvironmentValue: value) == nil)
    }
}
