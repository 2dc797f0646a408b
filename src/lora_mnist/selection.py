"""Choosing the target digit and its training subset (numpy only: no torch import cost)."""

from __future__ import annotations

import math

import numpy as np

from lora_mnist.errors import DataError


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


def check_enough(size: int, digit: int | list[int], batch_size: int, knob: str = "target.digit") -> None:
    """Fine-tuning needs at least one full batch of its digit(s); `knob` is the param that chose them."""
    if size < batch_size:
        raise DataError(
            f"digit {digit} has {size} training samples, fewer than one batch "
            f"(finetune.batch_size = {batch_size}); choose another {knob} or a smaller batch size"
        )


def replay_count(replay: float, batch_size: int) -> int:
    """Samples per fine-tuning batch drawn from the other digits: replay * batch_size rounded half up,
    leaving at least one target sample."""
    return min(math.floor(replay * batch_size + 0.5), batch_size - 1)
