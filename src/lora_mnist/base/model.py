"""RichBoyNet, the seed's deliberately oversized MLP for MNIST (784 -> h1 -> h2 -> 10), and its checkpoints:
safetensors carrying the config that made them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lora_mnist.artifacts import read_safetensors, safetensors_bytes, write_bytes
from lora_mnist.cli import ArtifactError
from lora_mnist.config import N_CLASSES, N_PIXELS


class RichBoyNet(nn.Module):
    """Three Linear layers with ReLU between them; state_dict keys are `linearN.weight` / `linearN.bias`."""

    def __init__(self, hidden_size_1: int = 1000, hidden_size_2: int = 2000) -> None:
        super().__init__()
        self.linear1 = nn.Linear(N_PIXELS, hidden_size_1)
        self.linear2 = nn.Linear(hidden_size_1, hidden_size_2)
        self.linear3 = nn.Linear(hidden_size_2, N_CLASSES)
        self.relu = nn.ReLU()

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Map images (..., 28, 28) or (N, 784) to logits (N, 10)."""
        x = img.reshape(-1, N_PIXELS)
        x = self.relu(self.linear1(x))
        x = self.relu(self.linear2(x))
        return self.linear3(x)


def model_bytes(model: RichBoyNet) -> bytes:
    """A plain RichBoyNet state_dict as safetensors bytes, its hidden sizes in the metadata."""
    config = {"hidden_size_1": model.linear1.out_features, "hidden_size_2": model.linear2.out_features}
    return safetensors_bytes(model.state_dict(), {"model": "RichBoyNet", "config": json.dumps(config, sort_keys=True)})


def save_model(model: RichBoyNet, path: str | Path) -> None:
    """Save a plain RichBoyNet (see model_bytes) atomically."""
    write_bytes(path, model_bytes(model))


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load `tensors` into `model` exactly: what load_state_dict(strict=True) refuses (a missing, unexpected or
    misshapen tensor), and a dtype it would cast silently, are an ArtifactError naming `source`."""
    expected = model.state_dict()
    for key in sorted(set(expected) & set(tensors)):
        if tensors[key].dtype != expected[key].dtype:
            raise ArtifactError(f"{source}: tensor {key} is {tensors[key].dtype}, expected {expected[key].dtype}")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{source}: {exc}") from None


def load_model(path: str | Path) -> RichBoyNet:
    """Rebuild a RichBoyNet from a checkpoint written by save_model."""
    tensors, metadata = read_safetensors(path, framework="pt")
    try:
        config = json.loads(metadata["config"])
        model = RichBoyNet(int(config["hidden_size_1"]), int(config["hidden_size_2"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: metadata has no valid RichBoyNet config ({exc!r})") from None
    load_state(model, tensors, path)
    return model
