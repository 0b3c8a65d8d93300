// swift-tools-version: 6.2
// 6.2 or later: a package that depends on Backprop by version may then use its `-fopenmp` flag.
import PackageDescription

let package = Package(
    name: "Backprop",
    products: [
        .library(name: "Backprop", targets: ["Backprop"]),
        .executable(name: "backprop", targets: ["backprop"]),
        .executable(name: "backprop-bench", targets: ["backprop-bench"]),
    ],
    // OpenMP is on by default; a dependent that lists `traits: []` on its `.package(...)` line
    // builds the kernels single-threaded, without the OpenMP runtime.
    traits: [
        .trait(name: "OpenMP", description: "Parallelise the C kernels with OpenMP (links libomp)."),
        .default(enabledTraits: ["OpenMP"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(
            name: "CKernels",
            path: "CKernels",
            cSettings: [
                .unsafeFlags(["-fopenmp"], .when(traits: ["OpenMP"])),
            ],
            linkerSettings: [
                .linkedLibrary("omp5", .when(traits: ["OpenMP"])),
                .linkedLibrary("openblas"),
                .linkedLibrary("z"),
                .linkedLibrary("m"),
            ]
        ),
        .target(name: "Backprop", dependencies: ["CKernels"]),
        .executableTarget(
            name: "backprop",
            dependencies: ["Backprop", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "backprop-bench",
            dependencies: ["Backprop", "CKernels", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Benchmarks",
            exclude: ["BENCHMARKS.md", "update.sh", "torch_train.py", "results"]
        ),
        .testTarget(name: "CKernelsTests", dependencies: ["CKernels"]),
        .testTarget(name: "BackpropTests", dependencies: ["Backprop", "CKernels"]),
    ]
)
