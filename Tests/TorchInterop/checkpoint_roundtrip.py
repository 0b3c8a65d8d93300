"""Checks that Backprop's checkpoints and PyTorch's state dicts load into each other.

Usage: python checkpoint_roundtrip.py RUN_DIR [BACKPROP_BINARY]
  RUN_DIR holds model.safetensors written by `backprop train` (its metadata names the model spec).

1. Loads RUN_DIR/model.safetensors with safetensors.torch.load_file into the model built by
   shared/bench/modelspec.py (load_state_dict, strict) and measures its test accuracy in PyTorch;
   it must equal the accuracy `backprop eval` reports for the same file.
2. Takes one SGD step in PyTorch, saves the state dict with safetensors.torch.save_file, and checks
   that `backprop eval` on that file reports the accuracy PyTorch measures.
Needs torch, numpy and safetensors (not part of CI: the Swift tests cover the format itself).
"""
import gzip
import os
import re
import subprocess
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "shared", "bench"))
import modelspec  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def torch_accuracy(model, images, labels):
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(images[i:i + 1000]) for i in range(0, len(images), 1000)])
    return (logits.argmax(1) == labels).double().mean().item()


def backprop_accuracy(binary, weights, spec):
    out = subprocess.run([binary, "eval", "--weights", weights, "--model", spec],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"accuracy ([0-9.]+)%", out).group(1)) / 100


def main():
    run = sys.argv[1]
    binary = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "..", ".build", "release", "backprop")
    weights = os.path.join(run, "model.safetensors")
    with safe_open(weights, "pt") as f:
        spec = f.metadata()["model"]
    images = torch.from_numpy(idx(f"{DATA}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255).unsqueeze(1)
    labels = torch.from_numpy(idx(f"{DATA}/t10k-labels-idx1-ubyte.gz").astype(np.int64))

    model = modelspec.build(spec)
    model.load_state_dict(load_file(weights), strict=True)
    ours, theirs = backprop_accuracy(binary, weights, spec), torch_accuracy(model, images, labels)
    print(f"Backprop -> PyTorch: Backprop {ours:.4f}, PyTorch {theirs:.4f}")
    assert abs(ours - theirs) <= 2e-4, "the same weights classify differently"

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = torch.nn.functional.cross_entropy(model(images[:256]), labels[:256])
    loss.backward()
    optimizer.step()
    back = os.path.join(run, "from_torch.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, back)
    ours, theirs = backprop_accuracy(binary, back, spec), torch_accuracy(model, images, labels)
    print(f"PyTorch -> Backprop: Backprop {ours:.4f}, PyTorch {theirs:.4f}")
    assert abs(ours - theirs) <= 2e-4, "the same weights classify differently"
    print("ok")


if __name__ == "__main__":
    main()
