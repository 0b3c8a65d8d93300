#!/usr/bin/env bash
# Fuzzes each parser (npy, safetensors, idx, spec, manifest, workloads) for SECONDS seconds (default 60) with libFuzzer
# under AddressSanitizer, starting from the seed corpus in Tests/Fuzz/corpus. Any trap, sanitizer
# report, leak-free out-of-memory (over 2 GB) or time-out (over 10 s on one input) fails the run,
# and libFuzzer leaves the input that did it in the working directory.
#   Tests/Fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
swift build --product backprop-fuzz --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address \
    -Xswiftc -parse-as-library -Xswiftc -DFUZZING -Xswiftc -use-ld=lld
for target in npy safetensors idx spec manifest workloads; do
    corpus=$(mktemp -d)
    cp Tests/Fuzz/corpus/"$target"/* "$corpus"/
    echo "fuzzing $target for ${seconds}s"
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 FUZZ_TARGET=$target .build-fuzz/debug/backprop-fuzz \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "$corpus" 2>&1 | tail -4
    rm -rf "$corpus"
done
