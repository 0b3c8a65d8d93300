import Backprop
import BackpropTestSupport
import BackpropTraining
import Foundation
import Testing

@Suite struct TextTrainingTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
        "backprop-text-\(UUID().uuidString)")
    static let spec = "embedding(vocab,12) lstm(12,32) linear(32,vocab)"

    init() throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    /// A small corpus with structure to learn: lines of a few words in a fixed pattern.
    static func corpusBytes(lines: Int = 600) -> [UInt8] {
        let words = ["the cat", "a dog", "my bird", "one fish"], verbs = ["sat", "ran", "sang", "swam"]
        var generator = SplitMix64(seed: 9)
        return Array(
            (0..<lines).map { _ in
                "\(words[Int(generator.next() % 4)]) \(verbs[Int(generator.next() % 4)]) home.\n"
            }.joined().utf8)
    }

    func trainer(_ corpus: TextCorpus, seed: UInt64 = 2) throws -> TextTrainer {
        let model = try CharacterModel(spec: Self.spec, vocabulary: corpus.vocabulary, seed: seed)
        return TextTrainer(
            model: model, optimizer: try Adam(parameters: model.network.parameters, learningRate: 0.01),
            streams: try TokenStreams(corpus.train, batch: 8, steps: 16), clipNorm: 5)
    }

    @Test func aFolderIsReadInNameOrderWithoutIndexesOrLinks() throws {
        let folder = directory.appendingPathComponent("corpus")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (name, text) in [("b", "bb"), ("a", "aa"), ("a.dat", "xx"), ("a.u8", "yy")] {
            try Data(text.utf8).write(to: folder.appendingPathComponent(name))
        }
        try FileManager.default.createSymbolicLink(
            at: folder.appendingPathComponent("c"), withDestinationURL: folder.appendingPathComponent("a"))
        let corpus = try TextCorpus(path: folder.path)
        #expect(corpus.vocabulary == Array("ab".utf8))
        #expect(corpus.train + corpus.validation == [0, 0, 1, 1])
    }

    @Test func theLastFivePercentIsHeldOut() throws {
        let corpus = try TextCorpus(bytes: Self.corpusBytes(), source: "test")
        let total = Self.corpusBytes().count
        #expect(corpus.train.count == Int(Double(total) * 0.95))
        #expect(corpus.train.count + corpus.validation.count == total)
    }

    /// After 150 updates the model predicts the next byte better than the bytes' own frequencies do.
    @Test func theLossFallsBelowTheUnigramEntropy() throws {
        let corpus = try TextCorpus(bytes: Self.corpusBytes(), source: "test")
        var counts = [Double](repeating: 0, count: corpus.vocabulary.count)
        for token in corpus.train { counts[Int(token)] += 1 }
        let entropy = counts.filter { $0 > 0 }.reduce(0.0) {
            let p = $1 / Double(corpus.train.count)
            return $0 - p * log(p)
        }
        let run = try trainer(corpus)
        for _ in 0..<150 { try run.update() }
        let validation = try run.validate(corpus.validation)
        #expect(validation < entropy - 0.5, "validation \(validation) nats/char, unigram entropy \(entropy)")
    }

    /// 2k updates in one go and k, a checkpoint, and k more from it in a new process's objects end
    /// with the same bits, the carried state and the optimizer's moments included.
    @Test func aResumedRunMatchesOneThatWasNot() throws {
        let corpus = try TextCorpus(bytes: Self.corpusBytes(), source: "test")
        let straight = try trainer(corpus)
        for _ in 0..<24 { try straight.update() }

        let first = try trainer(corpus)
        for _ in 0..<12 { try first.update() }
        let file = directory.appendingPathComponent("checkpoint.safetensors")
        try first.save(to: file)
        let model = try CharacterModel(spec: Self.spec, vocabulary: corpus.vocabulary, seed: 99)
        let optimizer = try Adam(parameters: model.network.parameters, learningRate: 0.01)
        let saved = try TextTrainer.resume(
            SafeTensors.read(contentsOf: file), source: file.path, model: model, optimizer: optimizer)
        #expect(saved.updatesDone == 12 && saved.states.count == 1)
        let resumed = TextTrainer(
            model: model, optimizer: optimizer, streams: try TokenStreams(corpus.train, batch: 8, steps: 16),
            clipNorm: 5, history: saved.history, updatesDone: saved.updatesDone, states: saved.states)
        for _ in 0..<12 { try resumed.update() }
        for (a, b) in zip(straight.model.network.namedParameters, resumed.model.network.namedParameters) {
            let differing = zip(bits(a.parameter.value.scalars), bits(b.parameter.value.scalars)).filter { $0 != $1 }
            #expect(differing.isEmpty, "\(a.name): \(differing.count) elements differ")
        }
        #expect(straight.history.training.loss == resumed.history.training.loss)
    }

    @Test func resumingOnAnotherCorpusIsRefused() throws {
        let corpus = try TextCorpus(bytes: Self.corpusBytes(), source: "test")
        let run = try trainer(corpus)
        try run.update()
        let file = directory.appendingPathComponent("other.safetensors")
        try run.save(to: file)
        let other = try TextCorpus(bytes: Self.corpusBytes() + Array("XYZ".utf8), source: "other")
        let model = try CharacterModel(spec: Self.spec, vocabulary: other.vocabulary, seed: 2)
        expectError(.invalidArgument, mentioning: ["vocabulary", "differs"]) {
            _ = try TextTrainer.resume(
                SafeTensors.read(contentsOf: file), source: file.path, model: model,
                optimizer: try Adam(parameters: model.network.parameters, learningRate: 0.01))
        }
    }

    @Test func samplingWithASeedIsReproducible() throws {
        let corpus = try TextCorpus(bytes: Self.corpusBytes(), source: "test")
        let run = try trainer(corpus)
        for _ in 0..<20 { try run.update() }
        let file = directory.appendingPathComponent("model.safetensors")
        try Checkpoint.save(run.model.network, to: file, metadata: run.model.metadata)
        let model = try CharacterModel.load(contentsOf: file)
        let a = try model.sample(prime: Array("the ".utf8), length: 40, temperature: 0.8, seed: 5)
        #expect(a.count == 40 && a.allSatisfy { corpus.vocabulary.contains($0) })
        #expect(try model.sample(prime: Array("the ".utf8), length: 40, temperature: 0.8, seed: 5) == a)
        #expect(try model.sample(prime: Array("the ".utf8), length: 40, temperature: 0.8, seed: 6) != a)
        expectError(.invalidArgument, mentioning: ["temperature", "positive"]) {
            _ = try model.sample(prime: [], length: 5, temperature: 0, seed: 1)
        }
        expectError(.invalidArgument, mentioning: ["not in the model's vocabulary"]) {
            _ = try model.sample(prime: Array("Q".utf8), length: 5, temperature: 1, seed: 1)
        }
    }

    @Test func badCorporaThrow() throws {
        expectError(.invalidArgument, mentioning: ["empty"]) { _ = try TextCorpus(bytes: [], source: "empty") }
        expectError(.invalidArgument, mentioning: ["/no/such/corpus", "no such file"]) {
            _ = try TextCorpus(path: "/no/such/corpus")
        }
        let short = try TextCorpus(bytes: Array("a short text".utf8), source: "short")
        expectError(.invalidArgument, mentioning: ["too short", "32 streams"]) {
            _ = try TokenStreams(short.train, batch: 32, steps: 64, source: "short")
        }
    }

    /// The reach measure has one norm per step, and the report draws it with the other charts.
    @Test func theReportShowsHowFarTheGradientReaches() throws {
        let corpus = try TextCorpus(bytes: Self.corpusBytes(), source: "test")
        let run = try trainer(corpus)
        try run.update()
        try run.measureReach()
        try run.validate(corpus.validation)
        let reach = try #require(run.history.reach.first)
        #expect(reach.norms.count == 16 && reach.norms.allSatisfy { $0.isFinite && $0 >= 0 })
        #expect(reach.norms.last! > 0)
        let page = TextReport.html(run.history)
        for title in ["Loss", "Gradient norm per layer", "How far back the gradient reaches"] {
            #expect(page.contains("aria-label=\"\(title)"))
        }
    }
}
