"""MNIST as normalised tensors in memory, and seeded shuffled batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from lora_mnist.errors import DataError
from lora_mnist.idx import raw_dir, read_mnist_split
from lora_mnist.selection import replay_count

MEAN, STD = 0.1307, 0.3081  # the seed's Normalize((0.1307,), (0.3081,))


def normalize(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, 28, 28) -> float32 (n, 784), as ToTensor() then Normalize() compute it."""
    x = torch.from_numpy(images.reshape(len(images), -1)).to(torch.float32).div(255)
    return x.sub(MEAN).div(STD)


def load_split(
    root: str | Path, split: str, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images float32 (n, 784) normalised, labels int64 (n,) of the `train` or `test` split; only `rows`
    (in that order) if given, so that only those are normalised."""
    images, labels = read_mnist_split(raw_dir(root), split)
    labels = torch.from_numpy(labels.astype(np.int64))
    if rows is None:
        return normalize(images), labels
    return normalize(images[rows.numpy()]), labels[rows]


def epoch_permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """A shuffle of range(n) drawn exactly as a DataLoader(shuffle=True) epoch draws it from `generator`."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the loader iterator's base seed
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())  # RandomSampler's
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def batch_indices(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """`steps` batches of indices into range(n): a fresh permutation each epoch, last batch may be short."""
    if n < 1:
        raise DataError("cannot draw batches from an empty set of samples")
    step = 0
    while step < steps:  # no draw for an epoch that will not run: later draws stay aligned
        perm = epoch_permutation(n, generator)
        for start in range(0, n, batch_size):
            if step == steps:
                return
            yield perm[start : start + batch_size]
            step += 1


def replay_batches(
    n_target: int, n_other: int, batch_size: int, replay: float, steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Batches of indices into cat(target, other): replay_count(replay, batch_size) of each come from
    `other`. replay = 0 gives exactly batch_indices over the target."""
    n_replay = replay_count(replay, batch_size)
    targets = batch_indices(n_target, batch_size - n_replay, steps, generator)
    if n_replay == 0:
        yield from targets
        return
    for target, other in zip(targets, batch_indices(n_other, n_replay, steps, generator)):
        yield torch.cat([target, other + n_target])


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of batches in one pass over n samples (the last one may be short, as DataLoader does)."""
    return -(-n // batch_size)
