"""Pretraining RichBoyNet from scratch, as the seed does, then counting its errors per digit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lora_mnist.comparison import per_digit
from lora_mnist.config import ModelParams, PretrainParams
from lora_mnist.data import batch_indices, load_split, steps_per_epoch
from lora_mnist.model import RichBoyNet
from lora_mnist.scoring import accuracy, predict, wrong_counts
from lora_mnist.selection import validation_size
from lora_mnist.train import train


@dataclass(frozen=True)
class Pretrained:
    """The trained model, its per-step losses and the metrics JSON layout."""

    model: RichBoyNet
    losses: list[float]
    metrics: dict


def pretrain(data_root: str | Path, model_cfg: ModelParams, cfg: PretrainParams, select_on: str,
             device: torch.device) -> Pretrained:
    """Train on all training images (select_on = test) or the first five sixths (validation); score it on the
    test set, and on the held-out sixth in validation mode (select_target chooses from those counts)."""
    images, labels = load_split(data_root, "train")
    n_val = validation_size(len(images), select_on)
    n_train = len(images) - n_val
    # As in the seed: manual_seed, build the model (its init draws first), then shuffle from the same
    # generator the way its DataLoader does; so seed 0 replays the seed's init and data order exactly.
    gen = torch.manual_seed(cfg.seed)
    model = RichBoyNet(model_cfg.hidden_size_1, model_cfg.hidden_size_2).to(device)
    steps = cfg.epochs * steps_per_epoch(n_train, cfg.batch_size)
    batches = batch_indices(n_train, cfg.batch_size, steps, gen)
    losses = train(model, images[:n_train].to(device), labels[:n_train].to(device), batches, steps=steps,
                   lr=cfg.lr, desc="pretrain")
    splits = {"test": load_split(data_root, "test")}
    if n_val:
        splits["validation"] = images[n_train:], labels[n_train:]
    scores = {}
    for name, (x, y) in splits.items():
        preds = predict(model, x.to(device))
        scores[name] = {"accuracy": accuracy(y, preds), "wrong": per_digit(wrong_counts(y, preds))}
    last = losses[-100:]
    metrics = {
        "device": device.type, "steps": steps, "train_size": n_train, "validation_size": n_val,
        "loss": {"first": losses[0], "last": losses[-1], "mean_last_100": sum(last) / len(last)}, **scores,
    }
    return Pretrained(model, losses, metrics)
