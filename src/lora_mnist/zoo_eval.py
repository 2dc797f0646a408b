"""The zoo on the test set: each adapter switched into one live model, and two adapters summed vs one trained on
both digits."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lora_mnist.adapter import load_adapter, switch_adapter
from lora_mnist.checkpoint import load_model
from lora_mnist.comparison import per_digit
from lora_mnist.data import load_split
from lora_mnist.lora import merge
from lora_mnist.peft_config import adapter_bytes
from lora_mnist.scoring import predict, wrong_counts

SUM_METHOD = ("sum of the two updates, W + s B_a A_a + s B_b A_b: with standard scaling, what PEFT's "
              "add_weighted_adapter computes with combination_type='cat' and weights [1, 1] (with use_rslora PEFT "
              "scales that sum by sqrt(2r); its 'linear' type mixes the factors, adding cross terms)")


@dataclass(frozen=True)
class ZooEvaluation:
    """The metrics JSON layout, and per model (row label) its test errors per digit and the digits it was trained
    for, for the heatmap."""

    metrics: dict
    wrong: dict[str, list[int]]
    own: dict[str, list[int]]


def stale_adapters(zoo_dir: str | Path, digits: Sequence[int], pair_dir: str | Path) -> list[str]:
    """Folders in the zoo that are neither an adapter of `digits` nor the pair: left by digits since removed from
    zoo.digits (DVC keeps the outputs of removed foreach entries), and counted in the zoo directory's hash."""
    keep = {str(d) for d in digits} | {Path(pair_dir).name}
    return sorted(str(p) for p in Path(zoo_dir).iterdir() if p.is_dir() and p.name not in keep)


def others_accuracy(labels: torch.Tensor, preds: torch.Tensor, digits: Sequence[int]) -> float:
    """Accuracy on the test images whose label is not one of `digits`."""
    others = ~torch.isin(labels, torch.tensor(list(digits), device=labels.device))
    return float((preds[others] == labels[others]).double().mean())


def summed(pretrained: str | Path, adapter_dirs: Sequence[str | Path]) -> nn.Module:
    """The pretrained model with every adapter's update folded in, one after the other."""
    model = load_model(pretrained)
    for adapter_dir in adapter_dirs:
        load_adapter(model, adapter_dir)
        model = merge(model)
    return model


def evaluate_zoo(data_root: str | Path, pretrained: str | Path, zoo_dir: str | Path, pair_dir: str | Path,
                 digits: Sequence[int], compose: Sequence[int], device: torch.device) -> ZooEvaluation:
    """Score the base, each zoo adapter (swapped into one live model), their sum for `compose` and the adapter
    trained on both `compose` digits (`pair_dir`). Sizes compare each adapter with a whole-model checkpoint, the
    pretrained one (a fully fine-tuned model has the very same tensors)."""
    images, labels = load_split(data_root, "test")
    images = images.to(device)
    base = load_model(pretrained).to(device)
    preds = {"base": predict(base, images)}
    live = load_model(pretrained)
    for i, digit in enumerate(digits):
        (load_adapter if i == 0 else switch_adapter)(live, Path(zoo_dir) / str(digit))
        preds[f"adapter {digit}"] = predict(live.to(device), images)
    a, b = compose
    preds[f"sum {a}+{b}"] = predict(summed(pretrained, [Path(zoo_dir) / str(d) for d in compose]).to(device), images)
    preds[f"pair {a}+{b}"] = predict(summed(pretrained, [pair_dir]).to(device), images)
    wrong = {name: wrong_counts(labels, p) for name, p in preds.items()}

    adapters = {}
    for digit in digits:
        p = preds[f"adapter {digit}"]
        adapters[str(digit)] = {
            "wrong_base": wrong["base"][digit], "wrong_lora": wrong[f"adapter {digit}"][digit],
            "others_accuracy_base": others_accuracy(labels, preds["base"], [digit]),
            "others_accuracy_lora": others_accuracy(labels, p, [digit]),
            "bytes": adapter_bytes(Path(zoo_dir) / str(digit)), "wrong": per_digit(wrong[f"adapter {digit}"]),
        }
    rows = {"base": "base", f"adapter_{a}": f"adapter {a}", f"adapter_{b}": f"adapter {b}",
            "sum": f"sum {a}+{b}", "pair": f"pair {a}+{b}"}
    composition = {
        "digits": [a, b], "sum_method": SUM_METHOD, "pair_bytes": adapter_bytes(pair_dir),
        "models": {key: {"wrong": {str(a): wrong[row][a], str(b): wrong[row][b]},
                         "others_accuracy": others_accuracy(labels, preds[row], compose)} for key, row in rows.items()},
    }
    full_bytes = Path(pretrained).stat().st_size
    median_bytes = statistics.median(entry["bytes"] for entry in adapters.values())
    metrics = {
        "device": device.type, "digits": list(digits), "base": {"wrong": per_digit(wrong["base"])},
        "adapters": adapters, "composition": composition, "full_model_bytes": full_bytes,
        "switch": {"adapter_bytes_median": median_bytes, "full_model_bytes": full_bytes,
                   "bytes_ratio": full_bytes / median_bytes,
                   "timing": "make bench-zoo (bench/zoo_switch.json): times vary from run to run, so they stay "
                             "out of this file, which is bit-for-bit reproducible"},
    }
    own = {f"adapter {d}": [d] for d in digits} | {f"sum {a}+{b}": [a, b], f"pair {a}+{b}": [a, b], "base": []}
    return ZooEvaluation(metrics, wrong, own)
