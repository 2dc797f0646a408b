"""Tiny synthetic MNIST-format (IDX) data that a model can actually learn, for end-to-end tests."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np

from lora_mnist.base.data import encode_idx


def make_split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 28, 28) uint8 with balanced labels; digit d lights a 7x7 block at a d-specific place."""
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
    for i, d in enumerate(labels):
        r, c = 3 + 7 * (d // 4), 2 + 6 * (d % 4)
        images[i, r : r + 7, c : c + 7] = rng.integers(180, 256, (7, 7), dtype=np.uint8)
    return images, labels


def write_mnist(directory: Path, n_train: int = 400, n_test: int = 200, seed: int = 0, gz: bool = True) -> dict:
    """Write the four MNIST files (gzipped by default) to `directory`; return {name: [size, md5]}."""
    rng = np.random.default_rng(seed)
    train, test = make_split(n_train, rng), make_split(n_test, rng)
    files = {
        "train-images-idx3-ubyte": encode_idx(train[0]), "train-labels-idx1-ubyte": encode_idx(train[1]),
        "t10k-images-idx3-ubyte": encode_idx(test[0]), "t10k-labels-idx1-ubyte": encode_idx(test[1]),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return {name: [len(data), hashlib.md5(data).hexdigest()] for name, data in files.items()}


def write_expected(path: Path, expected: dict) -> Path:
    """The checksum file the download stage reads from LORA_MNIST_EXPECTED_MD5."""
    path.write_text(json.dumps(expected))
    return path


def write_pretrained(path: Path, hidden_size_1: int, hidden_size_2: int) -> Path:
    """A tiny RichBoyNet checkpoint (random init, global seed 0), the stand-in for models/pretrained.safetensors."""
    import torch

    from lora_mnist.base.model import RichBoyNet, save_model

    torch.manual_seed(0)
    save_model(RichBoyNet(hidden_size_1, hidden_size_2), path)
    return path
