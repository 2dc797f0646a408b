"""IDX parsing and writing: exact round trips, and every malformed header rejected by name."""

from __future__ import annotations

import numpy as np
import pytest

from lora_mnist.errors import DataError
from lora_mnist.idx import MNIST_FILES, encode_idx, parse_idx, read_idx, read_mnist_split


def write_split(raw_dir, prefix, images, labels):
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / f"{prefix}-images-idx3-ubyte").write_bytes(encode_idx(images))
    (raw_dir / f"{prefix}-labels-idx1-ubyte").write_bytes(encode_idx(labels))


def test_official_table_is_consistent():
    for name, (size, _) in MNIST_FILES.items():
        n = 60_000 if name.startswith("train") else 10_000
        assert size == (16 + n * 784 if "images" in name else 8 + n)


def test_encode_then_parse_round_trip():
    images = np.arange(2 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(2, 28, 28)
    data = encode_idx(images)
    assert data[:16] == bytes.fromhex("00000803 00000002 0000001c 0000001c")
    assert np.array_equal(parse_idx(data, "x", ndim=3), images)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    assert encode_idx(labels) == bytes.fromhex("00000801 00000003 070009")


def test_encode_refuses_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        encode_idx(np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "truncated: expected at least 4 header bytes, found 2"),
        (b"\x00\x00\x08\x01\x00\x00", "truncated: expected at least 8 header bytes, found 6"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01", r"truncated: expected 11 bytes for shape \(3,\), found 9"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", r"trailing bytes: expected 9 bytes .*found 10"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x00", "wrong IDX magic: expected 0x00000801, found 0x00000803"),
        (b"\x01\x02\x08\x01\x00\x00\x00\x00", "wrong IDX magic: expected 0x00000801, found 0x01020801"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x00", "wrong IDX magic: .*0x00000d01 .*float32 is not supported"),
    ],
)
def test_parse_rejects_malformed(data, message):
    with pytest.raises(DataError, match=f"^some/file: {message}"):
        parse_idx(data, "some/file", ndim=1)


def test_read_idx_names_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope: file not found"):
        read_idx(tmp_path / "nope")


def test_read_mnist_split(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    write_split(tmp_path, "t10k", images, labels)
    got_images, got_labels = read_mnist_split(tmp_path, "test")
    assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels)
    assert got_images.dtype == got_labels.dtype == np.uint8
    with pytest.raises(DataError, match="train-images-idx3-ubyte: file not found"):
        read_mnist_split(tmp_path, "train")


def test_read_mnist_split_count_mismatch_names_both_files(tmp_path):
    write_split(tmp_path, "train", np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.uint8))
    message = "train-images-idx3-ubyte has 4 images but .*train-labels-idx1-ubyte has 3 labels"
    with pytest.raises(DataError, match=message):
        read_mnist_split(tmp_path, "train")


def test_read_mnist_split_checks_labels_and_image_size(tmp_path):
    write_split(tmp_path, "train", np.zeros((2, 28, 28), np.uint8), np.array([3, 10], np.uint8))
    with pytest.raises(DataError, match="labels must be 0..9, found 10"):
        read_mnist_split(tmp_path, "train")
    write_split(tmp_path, "train", np.zeros((2, 28, 27), np.uint8), np.array([3, 1], np.uint8))
    with pytest.raises(DataError, match="expected 28x28 images, found 28x27"):
        read_mnist_split(tmp_path, "train")
