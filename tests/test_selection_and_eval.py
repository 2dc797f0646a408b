"""Target choice, filtering, wrong counts, accuracy and seeded batching on tiny synthetic data."""

import numpy as np
import pytest
import torch

from lora_mnist.data import batch_indices, normalize, replay_batches, steps_per_epoch
from lora_mnist.errors import DataError
from lora_mnist.scoring import accuracy, predict, wrong_counts
from lora_mnist.comparison import per_digit
from lora_mnist.selection import check_enough, choose_target, target_indices


@pytest.mark.parametrize(
    "wrong,digit,expected",
    [
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "auto", 9),
        ([5, 1, 5, 0, 0, 0, 0, 0, 0, 5], "auto", 0),  # three-way tie -> smallest digit
        ([0, 0, 0, 7, 0, 0, 0, 7, 0, 0], "auto", 3),
        ([0] * 10, "auto", 0),
        ([9, 0, 0, 0, 0, 0, 0, 0, 0, 0], 4, 4),  # a fixed digit overrides the errors
    ],
)
def test_choose_target(wrong, digit, expected):
    assert choose_target(wrong, digit) == expected


def test_target_indices_are_exactly_the_digit_in_order():
    labels = np.array([3, 9, 1, 9, 9, 0], dtype=np.uint8)
    idx = target_indices(labels, 9)
    assert idx.tolist() == [1, 3, 4] and idx.dtype == np.int64
    with pytest.raises(DataError, match="digit 7 has no training samples"):
        target_indices(labels, 7)


def test_check_enough_names_digit_and_batch():
    check_enough(10, 9, 10)
    message = r"digit 9 has 3 training samples, fewer than one batch \(finetune.batch_size = 10\)"
    with pytest.raises(DataError, match=message):
        check_enough(3, 9, 10)


def test_wrong_counts_are_indexed_by_true_label():
    labels = torch.tensor([7, 7, 7, 1, 9, 0])
    preds = torch.tensor([9, 9, 7, 1, 4, 0])
    assert wrong_counts(labels, preds) == [0, 0, 0, 0, 0, 0, 0, 2, 0, 1]
    assert accuracy(labels, preds) == 3 / 6
    assert per_digit(wrong_counts(labels, preds))["7"] == 2


def test_predict_is_batched_argmax():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 10)
    x = torch.randn(25, 4)
    assert torch.equal(predict(model, x, batch_size=7), model(x).argmax(1))


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
    zero = list(replay_batches(30, 50, 10, 0.0, 7, torch.Generator().manual_seed(3)))
    assert len(zero) == 7 and all(torch.equal(a, b) for a, b in zip(plain, zero))


def test_replay_mixes_a_fixed_share_of_other_samples():
    batches = list(replay_batches(30, 50, 10, 0.2, 12, torch.Generator().manual_seed(3)))
    assert len(batches) == 12
    for batch in batches:
        target, other = batch[batch < 30], batch[batch >= 30]
        assert len(other) == 2 and len(target) <= 8 and other.max() < 80
    # the target stream still covers the whole target set each epoch (30 / 8 -> 4 batches)
    assert sorted(torch.cat([b[b < 30] for b in batches[:4]]).tolist()) == list(range(30))
    # never a batch without any target sample, even with replay close to 1
    assert all(len(b[b < 30]) >= 1 for b in replay_batches(30, 50, 10, 0.99, 5, torch.Generator()))


def test_empty_sample_set_is_an_error_not_an_endless_loop():
    with pytest.raises(DataError, match="empty"):
        next(batch_indices(0, 4, 3, torch.Generator()))


def test_validation_mode_holds_out_the_last_sixth_disjoint_from_pretraining_and_fine_tuning(tmp_path):
    """Pretraining (first 5/6), validation (last 1/6) and test are disjoint; the fine-tuning pool is pretraining's."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.numpy import load_file
    from synthetic import write_mnist

    from lora_mnist.selection import validation_size

    assert validation_size(60_000, "validation") == 10_000 and validation_size(60_000, "test") == 0
    write_mnist(tmp_path / "data" / "MNIST" / "raw", n_train=600, n_test=100, gz=False)
    root = Path(__file__).resolve().parents[1]
    for mode, pool in (("validation", 500), ("test", 600)):
        selection = tmp_path / f"select_{mode}.json"
        selection.write_text(json.dumps({"target": {"digit": 3, "chosen_on": mode}}))
        out = tmp_path / f"indices_{mode}.safetensors"
        subprocess.run([sys.executable, str(root / "stages/filter.py"), str(tmp_path / "data"), str(selection), str(out),
                        str(tmp_path / f"filter_{mode}.json")], check=True, capture_output=True,
                       env={"PYTHONPATH": str(root / "src")})
        tensors = load_file(out)
        rows = set(tensors["indices"].tolist()) | set(tensors["others"].tolist())
        assert rows == set(range(pool))  # validation mode: nothing from rows 500..599, which chose the target
        assert json.loads((tmp_path / f"filter_{mode}.json").read_text())["pool"] == pool
