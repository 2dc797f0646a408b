"""Per-tensor digests and exact comparisons of safetensors files (numpy only: fast to import)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from lora_mnist.errors import ArtifactError


def read_safetensors(path: str | Path, framework: str = "numpy") -> tuple[dict, dict[str, str]]:
    """All tensors ("numpy" arrays or "pt" tensors) and the metadata of a safetensors file (no pickle)."""
    try:
        with safe_open(str(path), framework=framework) as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from None


def canonical_safetensors(data: bytes) -> bytes:
    """Rewrite the header with sorted keys: safetensors writes metadata in hash (random) order."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # data must start 8-byte aligned; the format pads with spaces
    return len(header).to_bytes(8, "little") + header + data[8 + n :]


def digest(array: np.ndarray) -> str:
    """sha256 over dtype, shape and the raw bytes: any change to any of them changes it."""
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def tensor_digests(path: str | Path) -> dict[str, str]:
    """{tensor name: sha256} for every tensor of a safetensors file, sorted by name."""
    return {k: digest(v) for k, v in sorted(read_safetensors(path)[0].items())}


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest elementwise |a - b| (inf when shapes differ)."""
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))


def check_shapes(actual: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], source: str | Path) -> None:
    """`actual` (tensor name -> shape) names exactly the tensors of `expected`, with their shapes; else an
    ArtifactError naming the file and the first offending tensor."""
    for key in sorted(expected.keys() - actual.keys()):
        raise ArtifactError(f"{source}: missing tensor {key!r}")
    for key in sorted(actual.keys() - expected.keys()):
        raise ArtifactError(f"{source}: unexpected tensor {key!r}")
    for key in sorted(expected):
        if tuple(actual[key]) != tuple(expected[key]):
            raise ArtifactError(f"{source}: tensor {key!r} has shape {tuple(actual[key])}, expected {tuple(expected[key])}")
