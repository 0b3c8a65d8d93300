// swift-tools-version: 6.2
// 6.2 or later: a package that depends on Backprop by version may then use its `-fopenmp` flag.
import PackageDescription

let package = Package(
    name: "Backprop",
    products: [
        .library(name: "Backprop", targets: ["Backprop"]),
        .library(name: "BackpropTraining", targets: ["BackpropTraining"]),
        .executable(name: "backprop", targets: ["backprop"]),
        .executable(name: "backprop-bench", targets: ["backprop-bench"]),
    ],
    // OpenMP is on by default; a dependent that lists `traits: []` on its `.package(...)` line
    // builds the kernels single-threaded, without the OpenMP runtime. MPI is off by default:
    // `swift build --traits MPI` (Debian: openmpi-bin, libopenmpi-dev).
    traits: [
        .trait(name: "OpenMP", description: "Parallelise the C kernels with OpenMP (links libomp)."),
        .trait(
            name: "MPI",
            description: "Data-parallel training over Open MPI processes (links libmpi; implies OpenMP).",
            enabledTraits: ["OpenMP"]),
        .default(enabledTraits: ["OpenMP"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0")
    ],
    targets: [
        // The kernels: C and OpenMP.
        .target(
            name: "CKernels",
            path: "CKernels",
            cSettings: [
                .unsafeFlags(["-fopenmp"], .when(traits: ["OpenMP"]))
            ],
            linkerSettings: [
                .linkedLibrary("omp5", .when(traits: ["OpenMP"])),
                .linkedLibrary("m"),
            ]
        ),
        // The library: Tensor, modules, losses, optimizers, checkpoint formats, the model spec.
        .target(name: "Backprop", dependencies: ["CKernels"]),
        // gzip through zlib, for data sets.
        .target(name: "CGzip", linkerSettings: [.linkedLibrary("z")]),
        // Open MPI's C API, for the MPI trait.
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        // Training: the loop, data sets, the monitor, the HTML report, resumable checkpoints,
        // data-parallel steps (over MPI processes with the MPI trait).
        .target(
            name: "BackpropTraining",
            dependencies: ["Backprop", "CGzip", .target(name: "CMPI", condition: .when(traits: ["MPI"]))]),
        // The golden-case runner of `backprop verify` and the tests.
        .target(name: "BackpropFixtures", dependencies: ["Backprop"]),
        // What tests and the benchmark both need: seeded random tensors, bitwise and error checks.
        .target(name: "BackpropTestSupport", dependencies: ["Backprop", "CKernels"]),
        .executableTarget(
            name: "backprop",
            dependencies: [
                "Backprop", "BackpropTraining", "BackpropFixtures",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "backprop-fuzz",
            dependencies: ["Backprop", "BackpropTraining", "BackpropFixtures", "BackpropTestSupport"],
            path: "Tests/Fuzz",
            exclude: ["corpus", "run.sh"]),
        .executableTarget(
            name: "backprop-bench",
            dependencies: [
                "Backprop", "BackpropTestSupport", "CKernels",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks",
            exclude: [
                "BENCHMARKS.md", "update.sh", "torch_train.py", "median_runs.py", "results", "workloads-memory.json",
            ]
        ),
        .testTarget(name: "CKernelsTests", dependencies: ["CKernels", "BackpropTestSupport"]),
        .testTarget(
            name: "BackpropTests", dependencies: ["Backprop", "BackpropFixtures", "BackpropTestSupport", "CKernels"]),
        .testTarget(name: "BackpropCLITests", dependencies: ["backprop"]),
        .testTarget(
            name: "BackpropTrainingTests", dependencies: ["Backprop", "BackpropTraining", "BackpropTestSupport"]),
    ]
)
