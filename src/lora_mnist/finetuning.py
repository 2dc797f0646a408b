"""Fine-tuning: the set (target digit, plus the replay pool), the loop both stages share, LoRA and all weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lora_mnist.adapter import save_adapter
from lora_mnist.artifacts import read_json
from lora_mnist.checkpoint import load_model, model_bytes, safetensors_bytes
from lora_mnist.comparison import compare, read_per_digit
from lora_mnist.config import FinetuneParams, LoraParams
from lora_mnist.data import load_split, replay_batches
from lora_mnist.errors import ArtifactError
from lora_mnist.integrity import read_safetensors
from lora_mnist.lora import apply_lora, freeze_non_lora, merge, set_lora_impl, trainable_parameter_names
from lora_mnist.model import RichBoyNet
from lora_mnist.names import FINETUNED, MERGED
from lora_mnist.runtime import generator
from lora_mnist.scoring import accuracy, digit_totals, predict, wrong_counts
from lora_mnist.selection import check_enough, replay_count
from lora_mnist.train import train


@dataclass(frozen=True)
class FinetuneSet:
    """Training images of the target digit(s) first (n_target), then, only when replay draws from them, those of
    the other digits (n_other; 0 without replay)."""

    images: torch.Tensor  # (n_target + n_other, 784)
    labels: torch.Tensor  # (n_target + n_other,)
    n_target: int
    digits: tuple[int, ...]  # the target digits: one, except for the zoo's adapter trained on two

    @property
    def digit(self) -> int:
        """The one target digit."""
        if len(self.digits) != 1:
            raise ValueError(f"this set has {len(self.digits)} target digits {list(self.digits)}, not one")
        return self.digits[0]


def load_finetune_set(data_root: str | Path, indices_path: str | Path, cfg: FinetuneParams) -> FinetuneSet:
    """Gather the target digit's images chosen by the filter stage, and the replay pool if cfg.replay uses it.
    The digit is read off the images' labels: select_target.json is the only file that names it."""
    arrays, _ = read_safetensors(indices_path, framework="pt")
    if set(arrays) != {"indices", "others"}:
        raise ArtifactError(f"{indices_path}: expected tensors indices and others (made by the filter stage)")
    target, others = arrays["indices"], arrays["others"]
    replay = replay_count(cfg.replay, cfg.batch_size) > 0
    rows = torch.cat([target, others]) if replay else target  # no replay: 1/10 of the images to normalise
    images, labels = load_split(data_root, "train", rows=rows)
    digits = labels[: len(target)].unique().tolist()
    if len(digits) != 1:
        raise ArtifactError(f"{indices_path}: the target indices point at images of digits {digits}, not one digit")
    check_enough(len(target), digits[0], cfg.batch_size)
    return FinetuneSet(images, labels, len(target), (digits[0],))


def finetune(model: nn.Module, data: FinetuneSet, cfg: FinetuneParams, device: torch.device, desc: str) -> list[float]:
    """Train the model's trainable params for cfg.steps batches (replay share from the other digits)."""
    # Its own generator: LoRA and full fine-tuning then see the very same batches.
    batches = replay_batches(
        data.n_target, len(data.labels) - data.n_target, cfg.batch_size, cfg.replay, cfg.steps, generator(cfg.seed)
    )
    return train(model, data.images.to(device), data.labels.to(device), batches, steps=cfg.steps, lr=cfg.lr, desc=desc)


def finetune_lora(model_path: str | Path, data: FinetuneSet, cfg: FinetuneParams, lora: LoraParams,
                  device: torch.device) -> tuple[RichBoyNet, list[float]]:
    """The pretrained model with LoRA on `lora.targets` (A drawn from finetune.seed), originals frozen, trained."""
    model = load_model(model_path)
    apply_lora(model, lora.targets, lora.rank, lora.alpha, lora.init, lora.scaling, generator=generator(cfg.seed))
    freeze_non_lora(model)
    set_lora_impl(model, lora.impl)  # how training computes the update; the adapter is the same either way
    return model, finetune(model.to(device), data, cfg, device, desc="finetune")


def save_lora_outputs(model: RichBoyNet, out_dir: str | Path) -> None:
    """One directory, written in one atomic step: the PEFT adapter, the whole fine-tuned model with the names of
    the parameters that were trainable (for verify), and the merged export (W + scale * B @ A: a plain
    RichBoyNet, no LoRA code needed)."""
    trainable = json.dumps(trainable_parameter_names(model))
    save_adapter(model, out_dir, extra={FINETUNED: safetensors_bytes(model.state_dict(), {"trainable": trainable}),
                                        MERGED: model_bytes(merge(model))})


def finetune_all(model_path: str | Path, data: FinetuneSet, cfg: FinetuneParams, base_metrics: str | Path,
                 data_root: str | Path, device: torch.device) -> tuple[RichBoyNet, list[float], dict]:
    """The baseline: every weight trained on the very batches LoRA saw, then scored on the test set against the
    base model's results (read from `base_metrics`, select_target's file: `accuracy` and `wrong`)."""
    base_wrong = read_per_digit(base_metrics, "wrong")  # read first: a bad file fails before training
    base_accuracy = read_json(base_metrics).get("accuracy")
    if isinstance(base_accuracy, bool) or not isinstance(base_accuracy, (int, float)):
        raise ArtifactError(f"{base_metrics}: accuracy = {base_accuracy!r} is not a number")
    model = load_model(model_path)  # every parameter stays trainable
    losses = finetune(model.to(device), data, cfg, device, desc="finetune_full")
    images, labels = load_split(data_root, "test")
    preds = predict(model, images.to(device))
    wrong = {"base": base_wrong, "full": wrong_counts(labels, preds)}
    result = compare(digit_totals(labels), {"base": base_accuracy, "full": accuracy(labels, preds)}, wrong, data.digit)
    metrics = {"device": device.type, "steps": cfg.steps, "replay": cfg.replay, **result,
               "loss": {"first": losses[0], "last": losses[-1]},
               "trainable_params": sum(p.numel() for p in model.parameters())}
    return model, losses, metrics
