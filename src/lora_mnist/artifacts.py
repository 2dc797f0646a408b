"""The files the pipeline writes and reads: atomic writes (temp + rename, so an interrupted stage never leaves a
half-written output), stable JSON, safetensors without pickle, and per-tensor digests. numpy only: no torch import."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from lora_mnist.cli import ArtifactError
from lora_mnist.config import N_CLASSES


def _tmp_sibling(path: Path, *, directory: bool) -> Path:
    """Create a hidden temp file or dir beside `path` (same filesystem, so rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        return Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o644)  # mkstemp makes it 0600; outputs are ordinary readable files
    return Path(name)


def _remove_stale(path: Path) -> None:
    """Delete temp files a killed earlier write of `path` left behind (SIGKILL skips `finally`)."""
    for stale in path.parent.glob(f".tmp-{glob.escape(path.name)}-*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp file path; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    _remove_stale(path)
    tmp = _tmp_sibling(path, directory=False)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory; on success it replaces directory `path` whole, on error it is removed."""
    path = Path(path)
    _remove_stale(path)
    tmp = _tmp_sibling(path, directory=True)
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if path.exists():
            # A directory cannot be renamed over a non-empty one: move the old aside first.
            old = _tmp_sibling(path, directory=True)
            os.replace(path, old / "old")
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def json_bytes(obj: Any) -> bytes:
    """`obj` as stable, indented JSON: sorted keys, trailing newline."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as stable JSON (json_bytes) atomically."""
    write_bytes(path, json_bytes(obj))


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning a missing or malformed file into an ArtifactError."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None


def json_field(path: str | Path, *keys: str) -> Any:
    """A nested value of a JSON file; a missing file or key is an ArtifactError naming both."""
    node = read_json(path)
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            raise ArtifactError(f"{path}: missing key {'.'.join(keys)} (was it written by this version?)")
        node = node[key]
    return node


def per_digit(counts: list[int]) -> dict[str, int]:
    """{"0": n0, ..., "9": n9}: stable metric keys."""
    return {str(d): int(n) for d, n in enumerate(counts)}


def read_per_digit(path: str | Path, *keys: str) -> list[int]:
    """The counts a metrics file holds under `keys` as per_digit() wrote them; anything else is an ArtifactError."""
    node = json_field(path, *keys)
    counts = [node.get(str(d)) if isinstance(node, dict) else None for d in range(N_CLASSES)]
    for d, n in enumerate(counts):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ArtifactError(f"{path}: {'.'.join(keys)}.{d} = {n!r} is not a count")
    return counts


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


def safetensors_bytes(tensors: dict, metadata: dict[str, str] | None = None) -> bytes:
    """Serialise torch tensors (moved to CPU) or numpy arrays to safetensors bytes, identical for identical inputs."""
    if all(isinstance(v, np.ndarray) for v in tensors.values()):
        from safetensors.numpy import save
    else:
        from safetensors.torch import save  # a torch stage: torch is loaded already

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return canonical_safetensors(save(tensors, metadata=metadata))
