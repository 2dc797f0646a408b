"""base/data.py: IDX parsing and writing (exact round trips, every malformed header rejected by name), the
normalised images, and seeded batches that replay torch's DataLoader(shuffle=True) order exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lora_mnist.base.data import (
    MNIST_FILES,
    batch_indices,
    encode_idx,
    normalize,
    parse_idx,
    read_idx,
    read_mnist_split,
    replay_batches,
    steps_per_epoch,
)
from lora_mnist.cli import DataError
from lora_mnist.config import FinetuneParams


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


def test_batches_equal_dataloader_order_after_model_init():
    torch.manual_seed(0)
    torch.nn.Linear(5, 3)  # a model init draws from the global generator first, as in the seed
    loader = DataLoader(TensorDataset(torch.arange(23)), batch_size=5, shuffle=True)
    expected = [batch[0] for _ in range(3) for batch in loader]
    after_loader = torch.rand(2)

    gen = torch.manual_seed(0)
    torch.nn.Linear(5, 3)
    ours = list(batch_indices(23, 5, steps=len(expected), generator=gen))
    assert len(ours) == 15 and all(torch.equal(a, b) for a, b in zip(ours, expected))
    assert torch.equal(torch.rand(2), after_loader)  # the same number of draws, too


def test_batches_cover_each_epoch_and_are_seeded():
    batches = list(batch_indices(10, 4, 6, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]  # short last batch, as DataLoader
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(10))
    assert sorted(torch.cat(batches[3:]).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(batches[:3]), torch.cat(batches[3:]))  # fresh permutation per epoch
    again = list(batch_indices(10, 4, 6, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert steps_per_epoch(10, 4) == 3 and steps_per_epoch(60000, 10) == 6000


def test_normalize_matches_totensor_then_normalize():
    images = np.array([[[0, 255], [128, 1]]], dtype=np.uint8)
    x = normalize(images)
    assert x.shape == (1, 4) and x.dtype == torch.float32
    expected = (torch.tensor([0, 255, 128, 1], dtype=torch.float32) / 255 - 0.1307) / 0.3081
    assert torch.equal(x[0], expected)


def test_replay_zero_is_exactly_the_target_only_order():
    plain = list(batch_indices(30, 10, 7, torch.Generator().manual_seed(3)))
    zero = list(replay_batches(30, 50, 10, 0, 7, torch.Generator().manual_seed(3)))
    assert len(zero) == 7 and all(torch.equal(a, b) for a, b in zip(plain, zero))


def test_replay_mixes_a_fixed_share_of_other_samples():
    n_replay = FinetuneParams(batch_size=10, replay=0.2).replay_per_batch
    batches = list(replay_batches(30, 50, 10, n_replay, 12, torch.Generator().manual_seed(3)))
    assert len(batches) == 12
    for batch in batches:
        target, other = batch[batch < 30], batch[batch >= 30]
        assert len(other) == 2 and len(target) <= 8 and other.max() < 80
    # the target stream still covers the whole target set each epoch (30 / 8 -> 4 batches)
    assert sorted(torch.cat([b[b < 30] for b in batches[:4]]).tolist()) == list(range(30))
    # never a batch without any target sample, even with replay close to 1
    n_replay = FinetuneParams(batch_size=10, replay=0.99).replay_per_batch
    assert all(len(b[b < 30]) >= 1 for b in replay_batches(30, 50, 10, n_replay, 5, torch.Generator()))


def test_empty_sample_set_is_an_error_not_an_endless_loop():
    with pytest.raises(DataError, match="empty"):
        next(batch_indices(0, 4, 3, torch.Generator()))
