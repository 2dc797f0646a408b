"""MNIST: the IDX files it comes in (read and written, every byte count validated), the images as normalised
tensors, and seeded shuffled batches.

torch is imported inside the functions that make tensors: download and select_target read IDX files without it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lora_mnist.cli import DataError

if TYPE_CHECKING:
    import torch

# filename -> (size in bytes, md5) of the official uncompressed MNIST files.
MNIST_FILES: dict[str, tuple[int, str]] = {
    "train-images-idx3-ubyte": (47_040_016, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60_008, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (7_840_016, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10_008, "27ae3e4e09519cfbb04c329615203637"),
}

UBYTE = 0x08  # the only IDX element type MNIST uses
_OTHER_TYPES = {0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def parse_idx(data: bytes, name: str, *, ndim: int | None = None) -> np.ndarray:
    """Parse IDX bytes into a uint8 array; `name` labels errors, `ndim` (if given) is required."""
    if len(data) < 4:
        raise DataError(f"{name}: truncated: expected at least 4 header bytes, found {len(data)}")
    magic = int.from_bytes(data[:4], "big")
    want = f"0x{UBYTE << 8 | ndim:08x}" if ndim is not None else f"0x{UBYTE:06x}NN (NN = number of dims)"
    if data[0] or data[1] or data[2] != UBYTE or data[3] == 0 or (ndim is not None and data[3] != ndim):
        hint = ""
        if not (data[0] or data[1]) and data[2] in _OTHER_TYPES:
            hint = f" (element type {_OTHER_TYPES[data[2]]} is not supported, only unsigned byte 0x08)"
        raise DataError(f"{name}: wrong IDX magic: expected {want}, found 0x{magic:08x}{hint}")
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise DataError(f"{name}: truncated: expected at least {header} header bytes, found {len(data)}")
    dims = struct.unpack(f">{data[3]}I", data[4:header])
    size = header + math.prod(dims)
    if len(data) != size:
        what = "truncated" if len(data) < size else "trailing bytes"
        raise DataError(f"{name}: {what}: expected {size} bytes for shape {dims}, found {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """Read an uncompressed IDX file into a uint8 array (DataError if missing or malformed)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    return parse_idx(data, str(path), ndim=ndim)


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array (e.g. labels (n,) or images (n, 28, 28)) as IDX bytes."""
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(f"encode_idx needs a uint8 array with 1..255 dims, got {array.dtype} {array.shape}")
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, UBYTE, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def raw_dir(root: str | Path) -> Path:
    """Where the IDX files live under a data root (the layout torchvision's MNIST(root) reads)."""
    return Path(root) / "MNIST" / "raw"


def read_mnist_split(raw_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one MNIST split ("train" or "test") as uint8 images (n, 28, 28) and labels (n,)."""
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be one of {sorted(_SPLIT_PREFIX)}, got {split!r}")
    images_path = Path(raw_dir) / f"{_SPLIT_PREFIX[split]}-images-idx3-ubyte"
    labels_path = Path(raw_dir) / f"{_SPLIT_PREFIX[split]}-labels-idx1-ubyte"
    images, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: expected 28x28 images, found {images.shape[1]}x{images.shape[2]}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    return images, labels


MEAN, STD = 0.1307, 0.3081  # the seed's Normalize((0.1307,), (0.3081,))


def normalize(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, 28, 28) -> float32 (n, 784), as ToTensor() then Normalize() compute it."""
    import torch

    x = torch.from_numpy(images.reshape(len(images), -1)).to(torch.float32).div(255)
    return x.sub(MEAN).div(STD)


def load_split(
    root: str | Path, split: str, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images float32 (n, 784) normalised, labels int64 (n,) of the `train` or `test` split; only `rows`
    (in that order) if given, so that only those are normalised."""
    import torch

    images, labels = read_mnist_split(raw_dir(root), split)
    labels = torch.from_numpy(labels.astype(np.int64))
    if rows is None:
        return normalize(images), labels
    return normalize(images[rows.numpy()]), labels[rows]


def epoch_permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """A shuffle of range(n) drawn exactly as a DataLoader(shuffle=True) epoch draws it from `generator`."""
    import torch

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
    n_target: int, n_other: int, batch_size: int, n_replay: int, steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Batches of indices into cat(target, other): `n_replay` of each come from `other`. n_replay = 0 gives
    exactly batch_indices over the target."""
    import torch

    targets = batch_indices(n_target, batch_size - n_replay, steps, generator)
    if n_replay == 0:
        yield from targets
        return
    for target, other in zip(targets, batch_indices(n_other, n_replay, steps, generator)):
        yield torch.cat([target, other + n_target])


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of batches in one pass over n samples (the last one may be short, as DataLoader does)."""
    return -(-n // batch_size)
