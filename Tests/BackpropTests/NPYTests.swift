import Backprop
import BackpropTestSupport
import Foundation
import Testing

@Suite struct NPYTests {
    /// An .npy file as NumPy writes it: magic, version 1.0, a padded header, then the data.
    static func file(descr: String, fortran: Bool = false, shape: String, data: [UInt8]) -> Data {
        var header = "{'descr': '\(descr)', 'fortran_order': \(fortran ? "True" : "False"), 'shape': \(shape), }"
        header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
        let length = header.utf8.count
        return Data(
            [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(length & 0xff), UInt8(length >> 8)]
                + Array(header.utf8) + data)
    }

    static func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

    @Test func writeThenReadRoundTrips() throws {
        let tensor = try Tensor(shape: [2, 3, 1], scalars: [1.5, -2, 0, .infinity, .leastNonzeroMagnitude, 7])
        let url = FileManager.default.temporaryDirectory.appendingPathComponent(
            "npy-\(UInt64.random(in: 0...UInt64.max)).npy")
        defer { try? FileManager.default.removeItem(at: url) }
        try tensor.writeNPY(to: url)
        let read = try Tensor(npy: url)
        #expect(read.shape == tensor.shape)
        #expect(read.scalars.map(\.bitPattern) == tensor.scalars.map(\.bitPattern))
        // The data starts on a 64-byte boundary, as NumPy aligns it: the file is header + 6 × 4 bytes.
        #expect((try Data(contentsOf: url).count - 24) % 64 == 0)
    }

    @Test func readsFloat64AndInt64() throws {
        let doubles = try NPY.parse(
            Self.file(descr: "<f8", shape: "(3,)", data: Self.bytes([0.1, -2.0, 1e300])), name: "d")
        #expect(doubles.shape == [3] && doubles.doubles == [0.1, -2.0, 1e300])
        let ints = try NPY.parse(
            Self.file(descr: "<i8", shape: "(2, 2)", data: Self.bytes([Int64(3), 0, -1, 9])), name: "i")
        #expect(ints.shape == [2, 2])
        #expect(try ints.integers(file: "i") == [3, 0, -1, 9])
        let scalar = try NPY.parse(Self.file(descr: "<f8", shape: "()", data: Self.bytes([2.5])), name: "s")
        #expect(scalar.shape == [] && scalar.doubles == [2.5])
    }

    @Test func badFilesGiveClearErrors() {
        expectError(.format, mentioning: ["x.npy", "bad magic"]) {
            _ = try NPY.parse(Data("not numpy at all".utf8), name: "x.npy")
        }
        expectError(.format, mentioning: ["Fortran"]) {
            _ = try NPY.parse(
                Self.file(descr: "<f4", fortran: true, shape: "(2,)", data: Self.bytes([Float(1), 2])), name: "f")
        }
        expectError(.format, mentioning: ["unsupported dtype", "<f2"]) {
            _ = try NPY.parse(Self.file(descr: "<f2", shape: "(2,)", data: [0, 0, 0, 0]), name: "h")
        }
        expectError(.format, mentioning: ["unsupported dtype", ">f4"]) {
            _ = try NPY.parse(Self.file(descr: ">f4", shape: "(1,)", data: [0, 0, 0, 0]), name: "b")
        }
        expectError(.format, mentioning: ["7 data bytes", "expected 8"]) {
            _ = try NPY.parse(Self.file(descr: "<f4", shape: "(2,)", data: [0, 0, 0, 0, 0, 0, 0]), name: "t")
        }
        expectError(.format, mentioning: ["truncated header"]) {
            _ = try NPY.parse(Self.file(descr: "<f4", shape: "(2,)", data: []).prefix(30), name: "t")
        }
        expectError(.format, mentioning: ["u.npy", "header is not UTF-8"]) {
            var data = Self.file(descr: "<f4", shape: "(1,)", data: [0, 0, 0, 0])
            data[12] = 0xFF  // inside the header's text
            _ = try NPY.parse(data, name: "u.npy")
        }
        expectError(.format, mentioning: ["larger than the file"]) {
            _ = try NPY.parse(Self.file(descr: "<f4", shape: "(4611686018427387904, 4)", data: []), name: "o")
        }
        expectError(.format, mentioning: ["expected an int64 array"]) {
            _ = try NPY.parse(Self.file(descr: "<f4", shape: "(1,)", data: [0, 0, 0, 0]), name: "l").integers(file: "l")
        }
    }
}
