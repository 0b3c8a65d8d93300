import ArgumentParser
import Backprop
import BackpropFixtures
import BackpropTraining
import Foundation

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report a trained model's test loss, accuracy and confusion matrix.",
        discussion:
            "The weights are a .safetensors file with nn.Sequential names, as `backprop train` writes (model.safetensors or checkpoint.safetensors) or PyTorch's save_file(model.state_dict()) does."
    )

    static let fashionClasses = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]

    @Option(help: "The .safetensors file with the weights.") var weights: String
    @Option(help: "The model spec. Default: the one recorded in the file's metadata, else backprop train's default.")
    var model: String?
    @OptionGroup var dataOptions: DataOptions
    @OptionGroup var threadOptions: ThreadOptions

    func run() throws {
        try threadOptions.apply()
        let file = try SafeTensors.read(contentsOf: URL(fileURLWithPath: weights))
        let spec = model ?? file.metadata["model"] ?? Train.defaultModel
        let network = try ModelSpec.build(spec)
        try Checkpoint.load(TrainingCheckpoint.split(file.tensors).model, into: network, source: weights)
        let test = try dataOptions.load().test
        let (metrics, predictions) = try Training.classify(model: network, data: test)
        let classes = max((test.labels.max() ?? 0), (predictions.max() ?? 0)) + 1
        let matrix = Training.confusionMatrix(labels: test.labels, predictions: predictions, classes: classes)
        let names =
            dataOptions.data == Train.defaultData && classes == 10
            ? Eval.fashionClasses : (0..<classes).map(String.init)
        print(
            String(
                format: "%@ on %d test images: loss %.4f, accuracy %.2f%%", weights, test.count, metrics.loss,
                100 * metrics.accuracy))
        print("\nConfusion matrix (rows: true class, columns: predicted class)")
        let width = max(5, String(test.count).count + 1)
        let nameWidth = names.map(\.count).max() ?? 1
        print(
            String(repeating: " ", count: nameWidth + 3) + (0..<classes).map { pad(String($0), width) }.joined()
                + pad("recall", 9))
        for (index, row) in matrix.enumerated() {
            let total = row.reduce(0, +)
            let recall = total > 0 ? String(format: "%.1f%%", 100 * Double(row[index]) / Double(total)) : "-"
            print(
                pad(names[index], nameWidth, left: true) + pad(String(index), 3)
                    + row.map { pad(String($0), width) }.joined() + pad(recall, 9))
        }
    }

    private func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
        let space = String(repeating: " ", count: max(0, width - text.count))
        return left ? text + space : space + text
    }
}
