"""Predictions, accuracy and per-digit counts on a labelled set."""

from __future__ import annotations

import torch
from torch import nn

from lora_mnist.architecture import N_CLASSES


@torch.inference_mode()
def logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits (n, 10) on CPU, batched (the seed evaluates one image at a time)."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]).cpu()


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Argmax predictions (n,) int64 on CPU."""
    return logits(model, images, batch_size).argmax(dim=1)


def wrong_counts(labels: torch.Tensor, preds: torch.Tensor) -> list[int]:
    """Wrong predictions per digit, indexed by the TRUE label (as the seed counts them)."""
    wrong = labels[preds != labels]
    return torch.bincount(wrong, minlength=N_CLASSES).tolist()


def digit_totals(labels: torch.Tensor) -> list[int]:
    """How many samples of each digit there are."""
    return torch.bincount(labels, minlength=N_CLASSES).tolist()


def accuracy(labels: torch.Tensor, preds: torch.Tensor) -> float:
    """Fraction of correct predictions (full precision)."""
    return (preds == labels).sum().item() / len(labels)
