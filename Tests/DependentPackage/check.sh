#!/usr/bin/env bash
# Proves that another Swift package can depend on Backprop by version, as a user would with
# `.package(url: ..., from: "0.1.0")`: clones this checkout's HEAD, tags the clone 0.1.0, and builds
# and runs a tiny package that trains a layer through the library, with the default traits
# (OpenMP on) and with `traits: []` (OpenMP off).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git clone --quiet "$root" "$work/Backprop"
git -C "$work/Backprop" tag 0.1.0

make_app() {  # make_app DIR TRAITS-ARGUMENT (dependency traits need tools version 6.1)
    mkdir -p "$1/Sources/App"
    cat > "$1/Package.swift" <<MANIFEST
// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "App",
    dependencies: [.package(url: "file://$work/Backprop", from: "0.1.0"$2)],
    targets: [.executableTarget(name: "App", dependencies: [.product(name: "Backprop", package: "Backprop")])]
)
MANIFEST
    cat > "$1/Sources/App/main.swift" <<'SOURCE'
import Backprop

let layer = try Linear(3, 2, seed: 1)
let report = try GradientCheck.run(Sequential(layer, Tanh()), input: Tensor(shape: [4, 3], repeating: 0.5))
print(report)
guard report.passed else { fatalError("gradient check failed") }
print("dependent package OK (OpenMP: \(Threads.openMP))")
SOURCE
}

make_app "$work/app-default" ""
make_app "$work/app-no-openmp" ", traits: []"
for app in app-default app-no-openmp; do
    echo "== $app"
    swift build --package-path "$work/$app" 2>&1 | tail -n 3
    "$(swift build --package-path "$work/$app" --show-bin-path)/App"
done
