#!/usr/bin/env python3
"""PyTorch's time per training epoch for a model spec, to compare with `backprop train`.

Usage: torch_train.py [--model SPEC] [--data DIR] [--epochs N] [--batch-size B] [--lr LR] [--threads T]

Same defaults as `backprop train`: the default CNN, Fashion-MNIST from the Debian package
dataset-fashion-mnist, Adam with learning rate 1e-3 and a cosine schedule, batch 128, 5 epochs.
Prints per epoch the seconds, images/s and the test accuracy. Needs torch and numpy
(pip install torch numpy, outside the repository), and ../shared/bench/modelspec.py.
"""
import argparse
import gzip
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "bench"))
import modelspec  # noqa: E402

DEFAULT_MODEL = ("conv2d(1,32,3,pad=1) batchnorm2d(32) relu maxpool2d(2) conv2d(32,64,3,pad=1) batchnorm2d(64) "
                 "relu maxpool2d(2) flatten linear(3136,128) relu linear(128,10)")


def idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def load(directory, prefix):
    def find(name):
        for candidate in (name, name + ".gz"):
            if os.path.exists(os.path.join(directory, candidate)):
                return os.path.join(directory, candidate)
        raise SystemExit(f"{directory}: no {name}[.gz]")
    images = idx(find(f"{prefix}-images-idx3-ubyte")).astype(np.float32)[:, None] / 255
    labels = idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y = load(args.data, "train")
    tx, ty = load(args.data, "t10k")
    model = modelspec.build(args.model)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        for group in opt.param_groups:  # cosine over the epochs, as backprop train's default
            group["lr"] = args.lr * (1 + math.cos(math.pi * epoch / args.epochs)) / 2
        model.train()
        order = torch.randperm(len(y))
        start = time.perf_counter()
        for b in range(0, len(y), args.batch_size):
            idx_ = order[b:b + args.batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx_]), y[idx_])
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            correct = sum((model(tx[i:i + 1000]).argmax(1) == ty[i:i + 1000]).sum().item() for i in range(0, len(ty), 1000))
        print(f"epoch {epoch + 1}: {seconds:.1f}s, {len(y) / seconds:.0f} img/s, test acc {100 * correct / len(ty):.2f}%",
              flush=True)


if __name__ == "__main__":
    main()
