"""The fine-tuning set (target digit, plus the replay pool) and the loop both fine-tuning stages share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lora_mnist.config import FinetuneParams, replay_count
from lora_mnist.data import load_split, replay_batches
from lora_mnist.errors import ArtifactError
from lora_mnist.integrity import read_safetensors
from lora_mnist.runtime import generator
from lora_mnist.selection import check_enough
from lora_mnist.train import train


@dataclass(frozen=True)
class FinetuneSet:
    """Training images of the target digit first (n_target), then, only when replay draws from them, those of
    the other digits (n_other; 0 without replay)."""

    images: torch.Tensor  # (n_target + n_other, 784)
    labels: torch.Tensor  # (n_target + n_other,)
    n_target: int
    digit: int


def load_finetune_set(data_root: str | Path, indices_path: str | Path, cfg: FinetuneParams) -> FinetuneSet:
    """Gather the target digit's images chosen by the filter stage, and the replay pool if cfg.replay uses it."""
    arrays, meta = read_safetensors(indices_path, framework="pt")
    if set(arrays) != {"indices", "others"} or "digit" not in meta:
        raise ArtifactError(f"{indices_path}: expected tensors indices, others and a digit (made by the filter stage)")
    target, others, digit = arrays["indices"], arrays["others"], int(meta["digit"])
    check_enough(len(target), digit, cfg.batch_size)
    replay = replay_count(cfg.replay, cfg.batch_size) > 0
    rows = torch.cat([target, others]) if replay else target  # no replay: 1/10 of the images to normalise
    images, labels = load_split(data_root, "train", rows=rows)
    return FinetuneSet(images, labels, len(target), digit)


def finetune(model: nn.Module, data: FinetuneSet, cfg: FinetuneParams, device: torch.device, desc: str) -> list[float]:
    """Train the model's trainable params for cfg.steps batches (replay share from the other digits)."""
    # Its own generator: LoRA and full fine-tuning then see the very same batches.
    batches = replay_batches(
        data.n_target, len(data.labels) - data.n_target, cfg.batch_size, cfg.replay, cfg.steps, generator(cfg.seed)
    )
    return train(model, data.images.to(device), data.labels.to(device), batches, steps=cfg.steps, lr=cfg.lr, desc=desc)
