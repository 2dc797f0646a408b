"""Atomic writes (temp + rename) so an interrupted stage never leaves a half-written output."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lora_mnist.errors import ArtifactError


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
