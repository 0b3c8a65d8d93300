import Backprop
import CGzip
import Foundation

/// Image-classification data in the IDX format of MNIST and Fashion-MNIST, plain or gzip-compressed:
/// a big-endian header (two zero bytes, a type byte, a dimension count, each dimension as a 32-bit
/// count), then the values. Images are type 0x08 (unsigned bytes) of 3 dimensions [N, rows, cols];
/// labels type 0x08 of 1 dimension [N].
public struct ImageDataset: Sendable {
    /// [N, 1, rows, cols], pixel values scaled to [0, 1].
    public let images: Tensor
    public let labels: [Int]

    public var count: Int { labels.count }
    public var isEmpty: Bool { labels.isEmpty }

    public init(images: Tensor, labels: [Int]) throws {
        guard images.rank == 4, images.shape[0] == labels.count else {
            throw BackpropError(
                .shapeMismatch,
                "ImageDataset: \(images.shape.first ?? 0) images of shape \(describe(images.shape)) for \(labels.count) labels"
            )
        }
        self.images = images
        self.labels = labels
    }

    /// Reads `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` from `directory`
    /// (prefix "train" or "t10k", MNIST's layout).
    public static func load(directory: URL, prefix: String) throws -> ImageDataset {
        let imageFile = try IDX.find(directory, "\(prefix)-images-idx3-ubyte")
        let labelFile = try IDX.find(directory, "\(prefix)-labels-idx1-ubyte")
        let (imageDims, pixels) = try IDX.read(imageFile)
        let (labelDims, labelBytes) = try IDX.read(labelFile)
        guard imageDims.count == 3 else {
            throw BackpropError(.format, "\(imageFile.path): images need 3 dimensions, found \(imageDims.count)")
        }
        guard labelDims.count == 1 else {
            throw BackpropError(.format, "\(labelFile.path): labels need 1 dimension, found \(labelDims.count)")
        }
        guard imageDims[0] == labelDims[0] else {
            throw BackpropError(
                .format,
                "\(imageFile.lastPathComponent) has \(imageDims[0]) images but \(labelFile.lastPathComponent) has \(labelDims[0]) labels"
            )
        }
        let shape = [imageDims[0], 1, imageDims[1], imageDims[2]]
        return try ImageDataset(
            images: Tensor(shape: shape, scalars: pixels.map { Float($0) / 255 }),
            labels: labelBytes.map(Int.init))
    }

    /// The examples at `indices`, in that order, as a data set of their own.
    public func subset(_ indices: some Collection<Int>) -> ImageDataset {
        let (images, labels) = batch(indices)
        return ImageDataset(checked: images, labels: labels)
    }

    private init(checked images: Tensor, labels: [Int]) {
        self.images = images
        self.labels = labels
    }

    /// The examples at `indices`, in that order: a batch.
    public func batch(_ indices: some Collection<Int>) -> (images: Tensor, labels: [Int]) {
        let size = images.count / max(count, 1)
        var scalars = [Float]()
        scalars.reserveCapacity(indices.count * size)
        for i in indices { scalars.append(contentsOf: images.scalars[i * size..<(i + 1) * size]) }
        return (
            Tensor(unchecked: [indices.count] + images.shape.dropFirst(), scalars: scalars), indices.map { labels[$0] }
        )
    }
}

/// Reading IDX files (see ImageDataset).
public enum IDX {
    /// The dimensions and unsigned-byte values of an IDX file, gunzipped first when it is gzip.
    public static func read(_ url: URL) throws -> (dimensions: [Int], values: [UInt8]) {
        let raw: [UInt8]
        do { raw = [UInt8](try Data(contentsOf: url)) } catch {
            throw BackpropError(.format, "\(url.path): cannot read: \(error.localizedDescription)")
        }
        return try decode(raw, name: url.path)
    }

    /// The dimensions and values of an IDX file's bytes, gunzipped first when they are gzip.
    public static func decode(_ raw: [UInt8], name: String) throws -> (dimensions: [Int], values: [UInt8]) {
        try parse(raw.starts(with: [0x1f, 0x8b]) ? try gunzip(raw, name: name) : raw, name: name)
    }

    /// Parses the bytes of an (uncompressed) IDX file of unsigned bytes.
    public static func parse(_ bytes: [UInt8], name: String) throws -> (dimensions: [Int], values: [UInt8]) {
        guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0 else {
            throw BackpropError(.format, "\(name): not an IDX file (bad magic)")
        }
        guard bytes[2] == 0x08 else {
            throw BackpropError(
                .unsupported, "\(name): IDX type 0x\(String(bytes[2], radix: 16)) is not unsigned bytes (0x08)")
        }
        let rank = Int(bytes[3])
        guard rank > 0, bytes.count >= 4 + 4 * rank else {
            throw BackpropError(.format, "\(name): truncated IDX header")
        }
        let dimensions = (0..<rank).map { d in (0..<4).reduce(0) { $0 << 8 | Int(bytes[4 + 4 * d + $1]) } }
        let start = 4 + 4 * rank
        let (count, overflow) = dimensions.reduce((1, false)) { acc, size in
            let product = acc.0.multipliedReportingOverflow(by: size)
            return (product.partialValue, acc.1 || product.overflow)
        }
        guard !overflow else {
            throw BackpropError(.format, "\(name): dimensions \(describe(dimensions)) are too large")
        }
        guard bytes.count - start == count else {
            throw BackpropError(
                .format,
                "\(name): \(bytes.count - start) data bytes for dimensions \(describe(dimensions)), expected \(count)")
        }
        return (dimensions, Array(bytes[start...]))
    }

    /// Decompresses gzip data, sized from the trailer's length field (and grown if that is short;
    /// never above deflate's largest ratio, 1032:1, whatever a damaged trailer says).
    static func gunzip(_ data: [UInt8], name: String) throws -> [UInt8] {
        guard data.count >= 18 else { throw BackpropError(.format, "\(name): truncated gzip file") }
        let trailer = data.suffix(4).reversed().reduce(0) { $0 << 8 | Int($1) }
        var capacity = max(min(trailer, 1032 * data.count), 1024)
        while true {
            var out = [UInt8](repeating: 0, count: capacity)
            let written = bp_gunzip(&out, Int64(capacity), data, Int64(data.count))
            switch written {
            case -1: throw BackpropError(.format, "\(name): corrupt gzip data")
            case -2: throw BackpropError(.format, "\(name): truncated gzip data")
            case -3:
                guard capacity < 1032 * data.count else { throw BackpropError(.format, "\(name): corrupt gzip data") }
                capacity *= 2
            default: return Array(out.prefix(Int(written)))
            }
        }
    }

    /// `name` or `name.gz` in `directory`.
    static func find(_ directory: URL, _ name: String) throws -> URL {
        for candidate in [name, name + ".gz"] {
            let url = directory.appendingPathComponent(candidate)
            if FileManager.default.fileExists(atPath: url.path) { return url }
        }
        throw BackpropError(.format, "\(directory.path): no \(name) or \(name).gz")
    }
}
