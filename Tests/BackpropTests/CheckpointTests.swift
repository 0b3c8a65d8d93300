import Backprop
import BackpropTestSupport
import Foundation
import Testing

@Suite struct CheckpointTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
        "backprop-checkpoint-\(UUID().uuidString)")

    init() throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    /// The bytes of a safetensors file laid out by hand from the format's definition: header
    /// length, JSON header, then the tensors' little-endian data.
    static func handMade(header: String, data: [UInt8]) -> Data {
        var bytes = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: Array(header.utf8))
        bytes.append(contentsOf: data)
        return bytes
    }

    @Test func readsAFileLaidOutByTheSpecification() throws {
        // "a": F32 [2] = [1.5, -2]; "n": I64 [] = 7; "d": F64 [1] = 0.25.
        let data: [UInt8] =
            [0, 0, 0xc0, 0x3f, 0, 0, 0, 0xc0] + [7, 0, 0, 0, 0, 0, 0, 0] + [0, 0, 0, 0, 0, 0, 0xd0, 0x3f]
        let header =
            #"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
            + #""n":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"d":{"dtype":"F64","shape":[1],"data_offsets":[16,24]}}"#
        let file = try SafeTensors.decode(Self.handMade(header: header, data: data), name: "hand")
        #expect(file.metadata == ["format": "pt"])
        #expect(file.tensors["a"] == StoredArray(shape: [2], elements: .float32([1.5, -2])))
        #expect(file.tensors["n"] == StoredArray(shape: [], elements: .int64([7])))
        #expect(file.tensors["d"] == StoredArray(shape: [1], elements: .float64([0.25])))
    }

    @Test func writesWhatItReadsWithAlignedData() throws {
        let file = SafeTensors.File(
            tensors: [
                "w": StoredArray(randomTensor([3, 5], seed: 1)),
                "count": StoredArray(shape: [], elements: .int64([-3])),
            ],
            metadata: ["model": "linear(5,3)"])
        let bytes = try SafeTensors.encode(file)
        let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(headerLength % 8 == 0, "data starts 8-byte aligned")
        #expect(try SafeTensors.decode(bytes, name: "round trip") == file)
    }

    @Test func malformedFilesAreRefusedWithTheirProblem() throws {
        let good = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let cases: [(Data, BackpropError.Kind, String)] = [
            (Data([1, 2, 3]), .format, "truncated"),
            (Self.handMade(header: good, data: [0, 0, 0, 0]), .format, "outside the 4 data bytes"),
            (
                Self.handMade(header: good, data: [UInt8](repeating: 0, count: 12)), .format,
                "4 data bytes after the last tensor"
            ),
            (
                Self.handMade(
                    header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                    data: [UInt8](repeating: 0, count: 8)), .format, "expected 12"
            ),
            (
                Self.handMade(
                    header: #"{"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}}"#,
                    data: [UInt8](repeating: 0, count: 8)), .unsupported, "BF16"
            ),
            (Self.handMade(header: "{not json", data: []), .format, "not valid JSON"),
            // A shape whose byte count overflows Int (it used to trap).
            (
                Self.handMade(
                    header: #"{"0.bias": {"dtype": "F32", "shape": [999999999999, 4000000], "data_offsets": [0, 8]}}"#,
                    data: [UInt8](repeating: 0, count: 8)), .format, "more than Int can count"
            ),
            (
                Self.handMade(
                    header:
                        #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                    data: [0, 0, 0, 0]), .format, "overlap"
            ),
        ]
        for (bytes, kind, fragment) in cases {
            expectError(kind, mentioning: ["bad.safetensors", fragment]) {
                _ = try SafeTensors.decode(bytes, name: "bad.safetensors")
            }
        }
        var huge = Data()
        withUnsafeBytes(of: UInt64.max.littleEndian) { huge.append(contentsOf: $0) }
        expectError(.format, mentioning: ["truncated"]) { _ = try SafeTensors.decode(huge, name: "huge") }
    }

    @Test func aModelRoundTripsWithPyTorchNames() throws {
        let spec = "conv2d(1,2,3,pad=1) batchnorm2d(2) relu flatten linear(32,3)"
        let model = try ModelSpec.build(spec, seed: 1)
        let input = randomTensor([4, 1, 4, 4], seed: 2)
        _ = try model.forward(input)  // moves the running statistics and counts a batch
        let url = directory.appendingPathComponent("model.safetensors")
        try Checkpoint.save(model, to: url, metadata: ["model": spec])
        let file = try SafeTensors.read(contentsOf: url)
        #expect(
            Set(file.tensors.keys) == [
                "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                "1.num_batches_tracked", "4.weight", "4.bias",
            ])
        #expect(file.tensors["1.num_batches_tracked"] == StoredArray(shape: [], elements: .int64([1])))

        let copy = try ModelSpec.build(spec, seed: 99)
        #expect(try Checkpoint.load(from: url, into: copy) == ["model": spec])
        model.isTraining = false
        copy.isTraining = false
        #expect(try copy(input).scalars.map(\.bitPattern) == model(input).scalars.map(\.bitPattern))
        #expect((copy.layers[1] as! BatchNorm).batchesTracked?.value == 1)
    }

    @Test func aCheckpointThatDoesNotFitChangesNothing() throws {
        let model = try ModelSpec.build("linear(4,3) relu linear(3,2)", seed: 1)
        var state = Checkpoint.stateDict(of: model)
        let before = model.parameters.map(\.value)
        state["0.weight"] = StoredArray(randomTensor([3, 5], seed: 1))
        state["2.bias"] = nil
        state["9.weight"] = StoredArray(randomTensor([1], seed: 1))
        state["0.bias"] = StoredArray(shape: [3], elements: .int64([1, 2, 3]))
        state["2.weight"] = StoredArray(shape: [2, 3], elements: .float32([0, 1, .nan, 3, 4, 5]))
        expectError(
            .shapeMismatch,
            mentioning: [
                "file.safetensors", "0.weight has shape [3, 5], the model's is [3, 4]",
                "missing 2.bias", "unexpected 9.weight", "0.bias is int64",
                "2.weight holds nan at element 2, expected finite numbers",
            ]
        ) {
            try Checkpoint.load(state, into: model, source: "file.safetensors")
        }
        #expect(model.parameters.map(\.value) == before, "nothing was loaded")
    }

    /// Steps `count` times on a fixed least-squares problem.
    static func steps(_ optimizer: Optimizer, _ model: Module, count: Int, from first: Int = 0) throws {
        for step in first..<(first + count) {
            optimizer.zeroGrad()
            let (y, backward) = try model.forward(randomTensor([8, 4], seed: UInt64(step)))
            _ = try backward(y)  // J = ½‖y‖²
            optimizer.step()
        }
    }

    @Test(arguments: ["sgd", "adam", "adamw", "rmsprop"])
    func optimizerStateResumesExactly(kind: String) throws {
        func make(_ model: Module) throws -> Optimizer {
            switch kind {
            case "sgd": try SGD(parameters: model.parameters, learningRate: 0.1, momentum: 0.9, nesterov: true)
            case "adam": try Adam(parameters: model.parameters, learningRate: 0.01)
            case "adamw": try AdamW(parameters: model.parameters, learningRate: 0.01)
            default: try RMSprop(parameters: model.parameters, learningRate: 0.01, momentum: 0.5)
            }
        }
        let straight = try ModelSpec.build("linear(4,3) tanh linear(3,2)", seed: 5)
        try Self.steps(try make(straight), straight, count: 6)

        let first = try ModelSpec.build("linear(4,3) tanh linear(3,2)", seed: 5)
        let optimizer = try make(first)
        try Self.steps(optimizer, first, count: 3)
        let resumed = try ModelSpec.build("linear(4,3) tanh linear(3,2)", seed: 7)
        try Checkpoint.load(Checkpoint.stateDict(of: first), into: resumed, source: "state")
        let second = try make(resumed)
        try second.loadState(optimizer.state)
        try Self.steps(second, resumed, count: 3, from: 3)
        #expect(
            resumed.parameters.flatMap(\.value.scalars).map(\.bitPattern)
                == straight.parameters.flatMap(\.value.scalars).map(\.bitPattern))
    }

    @Test func optimizerStateOfAnotherShapeIsRefused() throws {
        let small = try ModelSpec.build("linear(4,3)", seed: 1), large = try ModelSpec.build("linear(5,3)", seed: 1)
        let adam = try Adam(parameters: small.parameters)
        expectError(.shapeMismatch, mentioning: ["Adam", "exp_avg.0", "[3, 4]"]) {
            try adam.loadState(try Adam(parameters: large.parameters).state)
        }
        var extra = adam.state
        extra["exp_avg.7"] = StoredArray(randomTensor([1], seed: 1))
        expectError(.shapeMismatch, mentioning: ["unexpected exp_avg.7"]) { try adam.loadState(extra) }
    }

    /// Counters from a file are checked before they are trusted: a negative step would give NaN
    /// losses, one near Int64.max would overflow at the next step.
    @Test(arguments: [Int64(-1), Int64.max])
    func countersOutOfRangeAreRefused(value: Int64) throws {
        let model = try ModelSpec.build("linear(2,2) batchnorm1d(2)", seed: 1)
        var state = Checkpoint.stateDict(of: model)
        state["1.num_batches_tracked"] = StoredArray(shape: [], elements: .int64([value]))
        expectError(.shapeMismatch, mentioning: ["1.num_batches_tracked is \(value)", "from 0 to 2^53"]) {
            try Checkpoint.load(state, into: model, source: "file.safetensors")
        }
        let adam = try Adam(parameters: model.parameters)
        var saved = adam.state
        saved["step"] = StoredArray(shape: [], elements: .int64([value]))
        expectError(.shapeMismatch, mentioning: ["Adam", "step \(value) is not a count"]) { try adam.loadState(saved) }
    }

    @Test func filesAreReplacedWholeAndNoTemporaryFileRemains() throws {
        let url = directory.appendingPathComponent("m.safetensors")
        let model = try ModelSpec.build("linear(3,2)", seed: 1)
        try Checkpoint.save(model, to: url)
        try Checkpoint.save(try ModelSpec.build("linear(3,2)", seed: 2), to: url)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["m.safetensors"])
        let other = try ModelSpec.build("linear(3,2)", seed: 3)
        try Checkpoint.load(from: url, into: other)
        #expect(try other.parameters.map(\.value) == ModelSpec.build("linear(3,2)", seed: 2).parameters.map(\.value))
        expectError(.format, mentioning: ["no-such-directory/x.safetensors", "cannot write"]) {
            try Checkpoint.save(model, to: directory.appendingPathComponent("no-such-directory/x.safetensors"))
        }
    }

    /// A symbolic link planted under the temporary file's name is not followed (its target stays
    /// as it was), and the temporaries of runs that were killed are swept.
    @Test func temporariesAreNeitherFollowedNorLeftBehind() throws {
        let url = directory.appendingPathComponent("m.safetensors")
        let victim = directory.appendingPathComponent("victim.txt")
        try Data("keep me".utf8).write(to: victim)
        try FileManager.default.createSymbolicLink(
            atPath: directory.appendingPathComponent(".m.safetensors.tmp-\(getpid())").path,
            withDestinationPath: victim.path)
        var dead: Int32 = 4_000_000  // a pid no process has: kill(pid, 0) fails with ESRCH
        while kill(dead, 0) == 0 || errno != ESRCH { dead -= 1 }
        try Data("stale".utf8).write(to: directory.appendingPathComponent(".m.safetensors.tmp-\(dead)"))
        try Checkpoint.save(try ModelSpec.build("linear(3,2)", seed: 1), to: url)
        #expect(try String(contentsOf: victim, encoding: .utf8) == "keep me")
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() == [
                "m.safetensors", "victim.txt",
            ])
    }
}
