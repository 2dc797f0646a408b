"""Stage `zoo`: one LoRA adapter per digit on the same frozen base, each trained on that digit's images only, and one
trained on the two zoo.compose digits together; then, in the same process, each adapter swapped into one live model
and scored on the test set, and the two digits' adapters summed against the one trained on both."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lora_mnist.artifacts import atomic_dir, per_digit, write_json
from lora_mnist.base.data import load_split, raw_dir, read_idx
from lora_mnist.base.model import load_model
from lora_mnist.base.select_target import check_enough, fine_tuning_pool
from lora_mnist.base.train import predict, read_logits, wrong_counts
from lora_mnist.config import ZooParams
from lora_mnist.lora.adapter import load_adapter, save_adapter, switch_adapter, training_record
from lora_mnist.lora.finetune import FinetuneSet, train_lora
from lora_mnist.lora.layer import merge
from lora_mnist.lora.peft_format import adapter_bytes
from lora_mnist.numerics import configure_torch, record
from lora_mnist.report import metrics, plots

PAIR = "pair"  # the folder, beside the digits', of the adapter trained on both zoo.compose digits
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


def digits_set(data_root: str | Path, digits: Sequence[int], select_on: str, batch_size: int) -> FinetuneSet:
    """Every training image of `digits` that fine-tuning may see (never the held-out validation images); too few
    for one batch is a DataError naming zoo.digits."""
    labels = read_idx(raw_dir(data_root) / "train-labels-idx1-ubyte")
    rows = np.flatnonzero(np.isin(fine_tuning_pool(labels, select_on), list(digits))).astype(np.int64)
    check_enough(len(rows), digits[0] if len(digits) == 1 else list(digits), batch_size, "zoo.digits")
    images, chosen = load_split(data_root, "train", rows=torch.from_numpy(rows))
    return FinetuneSet(images, chosen, len(rows), list(digits))


def train_zoo(zoo: ZooParams, select_on: str, data_root: str | Path, pretrained: str | Path, zoo_out: str | Path,
              device: torch.device) -> dict[str, dict]:
    """Train every adapter (zoo.digits, then the pair) and write them all, each with its training record, as one
    directory in one atomic step; returns the records by folder name."""
    cfg, lora = zoo.finetune(), zoo.lora()
    jobs = {str(d): [d] for d in zoo.digits} | {PAIR: list(zoo.compose)}
    records = {}
    with atomic_dir(zoo_out) as tmp:
        for name, digits in jobs.items():
            data = digits_set(data_root, digits, select_on, cfg.batch_size)
            model, losses = train_lora(pretrained, data, cfg, lora, device)
            records[name] = training_record(model, data.digits, data.n_target, losses)
            save_adapter(model, tmp / name, records[name])
    return records


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


def evaluate_zoo(data_root: str | Path, pretrained: str | Path, base_logits: str | Path, zoo_dir: Path,
                 digits: Sequence[int], compose: Sequence[int], device: torch.device) -> ZooEvaluation:
    """Score each zoo adapter (swapped into one live model), their sum for `compose` and the adapter trained on both
    `compose` digits (`zoo_dir`/pair) against the base (pretrain's logits). Sizes compare each adapter with a
    whole-model checkpoint, the pretrained one (a fully fine-tuned model has the very same tensors)."""
    images, labels = load_split(data_root, "test")
    pair_dir = zoo_dir / PAIR
    images = images.to(device)
    preds = {"base": read_logits(base_logits, len(labels)).argmax(dim=1)}
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
    out = {
        "device": device.type, "digits": list(digits), "base": {"wrong": per_digit(wrong["base"])},
        "adapters": adapters, "composition": composition, "full_model_bytes": full_bytes,
        "switch": {"adapter_bytes_median": median_bytes, "full_model_bytes": full_bytes,
                   "bytes_ratio": full_bytes / median_bytes,
                   "timing": "make bench-zoo (bench/zoo_switch.json): times vary from run to run, so they stay "
                             "out of this file, which is bit-for-bit reproducible"},
    }
    own = {f"adapter {d}": [d] for d in digits} | {f"sum {a}+{b}": [a, b], f"pair {a}+{b}": [a, b], "base": []}
    return ZooEvaluation(out, wrong, own)


def zoo(device_name: str, numerics: str, cfg: ZooParams, select_on: str, data_root: str, pretrained: str,
        base_logits: str, zoo_out: str, metrics_out: str, headline_out: str, numerics_out: str,
        heatmap_out: str) -> str:
    """The stage: train the zoo, score it, write its metrics, headline and heatmap; returns a summary line."""
    device = configure_torch(device_name, numerics)
    train_zoo(cfg, select_on, data_root, pretrained, zoo_out, device)
    result = evaluate_zoo(data_root, pretrained, base_logits, Path(zoo_out), cfg.digits, cfg.compose, device)
    plots.write_zoo_heatmap(heatmap_out, result.wrong, result.own)
    write_json(metrics_out, result.metrics)
    write_json(headline_out, headline := metrics.zoo_headline(result.metrics))
    write_json(numerics_out, record(device))
    models = result.metrics["composition"]["models"]
    return (f"zoo: {headline['zoo_improved']} of {headline['zoo_adapters']} adapters cut their digit's errors; digits "
            f"{list(cfg.compose)}: summed adapters {models['sum']['wrong']}, trained together "
            f"{models['pair']['wrong']}")
