"""Stage `pretrain`: RichBoyNet trained from scratch as the seed does, then its errors counted per digit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lora_mnist.artifacts import per_digit, write_json
from lora_mnist.base.data import batch_indices, load_split, steps_per_epoch
from lora_mnist.base.model import RichBoyNet, save_model
from lora_mnist.base.select_target import validation_size
from lora_mnist.base.train import accuracy, logits, train, write_logits, write_losses, wrong_counts
from lora_mnist.config import ModelParams, PretrainParams
from lora_mnist.numerics import configure_torch, record


@dataclass(frozen=True)
class Pretrained:
    """The trained model, its per-step losses, its test-set logits and the metrics JSON layout."""

    model: RichBoyNet
    losses: list[float]
    test_logits: torch.Tensor  # (10000, 10): the base model's answers, which no later stage recomputes
    metrics: dict


def train_base(data_root: str | Path, model_cfg: ModelParams, cfg: PretrainParams, select_on: str,
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
    scores, outputs = {}, {}
    for name, (x, y) in splits.items():
        outputs[name] = logits(model, x.to(device))
        preds = outputs[name].argmax(dim=1)
        scores[name] = {"accuracy": accuracy(y, preds), "wrong": per_digit(wrong_counts(y, preds))}
    last = losses[-100:]
    metrics = {
        "device": device.type, "steps": steps, "train_size": n_train, "validation_size": n_val,
        "loss": {"first": losses[0], "last": losses[-1], "mean_last_100": sum(last) / len(last)}, **scores,
    }
    return Pretrained(model, losses, outputs["test"], metrics)


def pretrain(device_name: str, numerics: str, model_cfg: ModelParams, cfg: PretrainParams, select_on: str,
             data_root: str, model_out: str, logits_out: str, metrics_out: str, numerics_out: str,
             loss_out: str) -> str:
    """The stage: train, then write the model, its test-set logits, its metrics, the loss curve and the numerics
    record; returns a summary line."""
    device = configure_torch(device_name, numerics)
    result = train_base(data_root, model_cfg, cfg, select_on, device)
    save_model(result.model, model_out)
    write_logits(logits_out, result.test_logits)
    write_losses(loss_out, result.losses)
    write_json(metrics_out, result.metrics)
    write_json(numerics_out, record(device))
    m = result.metrics
    return (f"pretrain: {m['steps']} steps on {m['train_size']} images ({device.type}), mean loss of last 100 steps "
            f"{m['loss']['mean_last_100']:.4f}, test accuracy {m['test']['accuracy']:.4f} -> {model_out}")
