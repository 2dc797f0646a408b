"""Metric dicts with stable keys, built from per-digit and parameter counts (pure Python, no torch import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_mnist.artifacts import json_field
from lora_mnist.architecture import N_CLASSES
from lora_mnist.errors import ArtifactError
from lora_mnist.names import LORA_MARK


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


def compare(totals: list[int], accuracy: dict[str, float], wrong: dict[str, list[int]], digit: int) -> dict:
    """The test-set comparison of several models (the first is the baseline): the metrics JSON layout."""
    return {
        "accuracy": accuracy,
        "wrong": {model: per_digit(counts) for model, counts in wrong.items()},
        "target": {"digit": digit, **{f"wrong_{model}": counts[digit] for model, counts in wrong.items()}},
        "forgetting": forgetting(totals, wrong, digit, baseline=next(iter(wrong))),
    }


def forgetting(totals: list[int], wrong: dict[str, list[int]], digit: int, baseline: str = "base") -> dict:
    """Accuracy on the target digit and on all other digits per model, and which digit lost most.

    `totals[d]` is the number of test images of digit d; `wrong[model][d]` the wrong predictions among them.
    """
    others = [d for d in range(len(totals)) if d != digit]
    n_others = sum(totals[d] for d in others)
    out: dict = {  # None where there is nothing to measure (possible on tiny synthetic test sets)
        "target_accuracy": {m: 1 - w[digit] / totals[digit] if totals[digit] else None for m, w in wrong.items()},
        "others_accuracy": {m: 1 - sum(w[d] for d in others) / n_others if n_others else None
                            for m, w in wrong.items()},
    }
    for model, counts in wrong.items():
        if model == baseline:
            continue
        increase = {d: counts[d] - wrong[baseline][d] for d in others}
        worst = max(others, key=lambda d: (increase[d], -d))  # ties -> smallest digit
        out[model] = {"most_hurt_digit": worst, "most_hurt_extra_wrong": increase[worst],
                      "extra_wrong_others": sum(increase.values())}
    return out


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts: original (non-LoRA) and LoRA, and LoRA as a percentage of original."""

    original: int
    lora: int
    increment_pct: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "increment_pct", 100 * self.lora / self.original if self.original else 0.0)


def count_parameters(model: Any) -> ParamCount:
    """Count non-LoRA parameters (frozen weights + biases) and LoRA ones (`lora_` in the name, as in lora.py)."""
    sizes = [(LORA_MARK in name, p.numel()) for name, p in model.named_parameters()]
    return ParamCount(original=sum(n for is_lora, n in sizes if not is_lora), lora=sum(n for is_lora, n in sizes if is_lora))
