#!/usr/bin/env bash
# Data-parallel training over Open MPI: builds backprop with the MPI trait, then trains two models
# (the default CNN with batch norm; an MLP with dropout and batch norm) for 2 epochs on 512
# Fashion-MNIST images with 4 micro-batches, with and without --sync-batchnorm, as
# (processes, threads) = (1, 1), (1, 2), (2, 1) and (4, 1): model.safetensors must be the same bytes
# in every case. Then a resumed run under another process count, and the refusals: micro-batches
# the processes cannot share, processes started with different arguments, a build without MPI,
# and a process that fails alone (the job must end with its message, not hang).
# Needs openmpi-bin, libopenmpi-dev and dataset-fashion-mnist.
set -euo pipefail
cd "$(dirname "$0")/../.."

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # CI runs as root
export OMPI_MCA_rmaps_base_oversubscribe=1                         # 4 processes on 2 cores
swift build -c release --traits MPI --scratch-path .build-mpi --product backprop
backprop=$PWD/.build-mpi/release/backprop
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The first 512 training and 256 test images, as plain IDX files.
python3 - "$work/data" <<'PYTHON'
import gzip, os, struct, sys
source, target = "/usr/share/datasets/fashion-mnist", sys.argv[1]
os.makedirs(target)
for name, count in [("train-images-idx3-ubyte", 512), ("train-labels-idx1-ubyte", 512),
                    ("t10k-images-idx3-ubyte", 256), ("t10k-labels-idx1-ubyte", 256)]:
    data = gzip.open(f"{source}/{name}.gz").read()
    rank = data[3]
    shape = list(struct.unpack(f">{rank}I", data[4:4 + 4 * rank]))
    size = 1
    for d in shape[1:]:
        size *= d
    body = data[4 + 4 * rank:4 + 4 * rank + count * size]
    open(f"{target}/{name}", "wb").write(data[:4] + struct.pack(f">{rank}I", count, *shape[1:]) + body)
PYTHON

train() {  # train OUTPUT PROCESSES THREADS ARGUMENTS...
    local output=$1 processes=$2 threads=$3
    shift 3
    timeout 300 mpirun -np "$processes" "$backprop" train --data "$work/data" --epochs 2 --batch-size 64 \
        --micro-batches 4 --threads "$threads" --output "$output" "$@" >"$output.log" 2>&1 \
        || { cat "$output.log"; echo "FAIL: training as $processes x $threads: $*"; exit 1; }
}

mlp="flatten linear(784,128) relu dropout(0.3) linear(128,64) batchnorm1d(64) relu dropout(0.2) linear(64,10)"
for model in default mlp; do
    for sync in "" --sync-batchnorm; do
        arguments=($sync)
        [ "$model" = mlp ] && arguments+=(--model "$mlp")
        sums=()
        for run in "1 1" "1 2" "2 1" "4 1"; do
            set -- $run
            out="$work/$model$sync-$1x$2"
            train "$out" "$1" "$2" ${arguments[@]+"${arguments[@]}"}
            sums+=("$(md5sum <"$out/model.safetensors" | cut -d' ' -f1)")
        done
        if [ "$(printf '%s\n' "${sums[@]}" | sort -u | wc -l)" != 1 ]; then
            echo "FAIL: $model $sync: model.safetensors differs across (processes, threads): ${sums[*]}"
            exit 1
        fi
        echo "ok: $model ${sync:-(own statistics)}: the same bytes for (1,1), (1,2), (2,1), (4,1): ${sums[0]}"
    done
done

# A run of 1 epoch under 2 processes, resumed for the second under 4, equals the 2 epochs in one go.
train "$work/resumed" 2 1 --model "$mlp" --epochs 1
timeout 300 mpirun -np 4 "$backprop" train --data "$work/data" --resume "$work/resumed" --epochs 2 --threads 1 \
    --output "$work/resumed" >"$work/resume.log" 2>&1 || { cat "$work/resume.log"; exit 1; }
cmp "$work/resumed/model.safetensors" "$work/mlp-1x1/model.safetensors" \
    || { echo "FAIL: the resumed run differs"; exit 1; }
echo "ok: resumed under 4 processes after 1 epoch under 2: the same bytes"

expect_refusal() {  # expect_refusal MESSAGE COMMAND...: fails unless COMMAND fails within 60 s saying MESSAGE
    local message=$1 status=0
    shift
    timeout 60 "$@" >"$work/refusal.log" 2>&1 || status=$?
    if [ "$status" = 0 ] || [ "$status" = 124 ] || ! grep -qF -- "$message" "$work/refusal.log"; then
        cat "$work/refusal.log"
        echo "FAIL: expected a refusal saying '$message' (exit status $status)"
        exit 1
    fi
    echo "ok: refused: $message"
}
expect_refusal "--micro-batches 3 cannot be shared equally by the 2 processes" \
    mpirun -np 2 "$backprop" train --data "$work/data" --micro-batches 3 --output "$work/bad"
expect_refusal "process 1 was started with other arguments than process 0" \
    mpirun -np 1 "$backprop" train --data "$work/data" --epochs 1 --output "$work/bad" \
    : -np 1 "$backprop" train --data "$work/data" --epochs 2 --output "$work/bad"
expect_refusal "Error (process 0 of 2): --output /proc/backprop" \
    mpirun -np 2 "$backprop" train --data "$work/data" --output /proc/backprop/out
swift build --product backprop
expect_refusal "this backprop was built without MPI" \
    mpirun -np 2 "$(swift build --show-bin-path)/backprop" train --data "$work/data" --output "$work/bad"
echo "MPI checks passed"
