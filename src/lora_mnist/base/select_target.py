"""Stage `select_target`: the digit the pretrained model gets wrong most (or the one given), and the indices of its
training images, the set fine-tuning draws from. numpy only: no torch import."""

from __future__ import annotations

import numpy as np

from lora_mnist.artifacts import json_field, per_digit, read_per_digit, safetensors_bytes, write_bytes, write_json
from lora_mnist.base.data import raw_dir, read_idx
from lora_mnist.cli import DataError
from lora_mnist.config import TargetParams


def validation_size(n_train: int, select_on: str) -> int:
    """Training images held out to choose the target: none in `test` mode, else the last sixth (MNIST's 10,000 of
    60,000, the split of its own train/valid distributions); the rest is all pretraining and fine-tuning see."""
    return n_train // 6 if select_on == "validation" else 0


def fine_tuning_pool(labels: np.ndarray, select_on: str) -> np.ndarray:
    """The training labels fine-tuning may draw from: all but the held-out validation images, which chose the
    target in `validation` mode."""
    return labels[: len(labels) - validation_size(len(labels), select_on)]


def choose_target(wrong: list[int], digit: int | str) -> int:
    """`auto`: the most-wrong digit, ties to the smallest; otherwise the given digit."""
    if digit == "auto":
        return max(range(len(wrong)), key=lambda d: (wrong[d], -d))
    return int(digit)


def target_indices(labels: np.ndarray, digit: int) -> np.ndarray:
    """Indices (int64, ascending) of the samples labelled `digit`; none at all is an error."""
    indices = np.flatnonzero(labels == digit).astype(np.int64)
    if len(indices) == 0:
        raise DataError(f"target digit {digit} has no training samples")
    return indices


def check_enough(size: int, digit: int | list[int], batch_size: int, knob: str) -> None:
    """Fine-tuning needs at least one full batch of its digit(s); `knob` is the param that chose them."""
    if size < batch_size:
        raise DataError(f"digit {digit} has {size} training samples, fewer than one batch of {batch_size}; "
                        f"choose another {knob} or a smaller batch size")


def select_target(cfg: TargetParams, data_root: str, pretrain_metrics: str, selection_out: str, indices_out: str,
                  set_out: str) -> str:
    """The stage: choose the digit from pretrain's per-digit errors on cfg.select_on, then write the selection (with
    the base model's test results, which later stages compare against) and the indices of its training images
    (never the held-out validation ones) and of the other digits' (the replay pool); returns a summary line."""
    chosen_on = read_per_digit(pretrain_metrics, cfg.select_on, "wrong")
    test_wrong = read_per_digit(pretrain_metrics, "test", "wrong")
    digit = choose_target(chosen_on, cfg.digit)
    labels = fine_tuning_pool(read_idx(raw_dir(data_root) / "train-labels-idx1-ubyte"), cfg.select_on)
    indices = target_indices(labels, digit)
    others = np.flatnonzero(labels != digit).astype(np.int64)
    # The base model's test results travel on from here, not from pretrain's file: its numerics record
    # (thread count...) may change without the results changing, and must not re-run finetune_full.
    write_json(selection_out, {
        "accuracy": json_field(pretrain_metrics, "test", "accuracy"), "wrong": per_digit(test_wrong),
        "target": {"digit": digit, "mode": "auto" if cfg.digit == "auto" else "fixed", "chosen_on": cfg.select_on,
                   "wrong": chosen_on[digit]},
        "chosen_on_wrong": per_digit(chosen_on),
    })
    write_bytes(indices_out, safetensors_bytes({"indices": indices, "others": others}))
    write_json(set_out, {"digit": digit, "size": len(indices), "others": len(others), "pool": len(labels)})
    return (f"select_target: wrong per digit on the {cfg.select_on} set {chosen_on}, target digit {digit}, "
            f"{len(indices)} training images of it -> {indices_out}")
