"""RichBoyNet checkpoints in safetensors, carrying the config that made them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save

from lora_mnist.artifacts import write_bytes
from lora_mnist.errors import ArtifactError
from lora_mnist.integrity import canonical_safetensors, read_safetensors
from lora_mnist.model import RichBoyNet


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """Serialise tensors (moved to CPU) to safetensors bytes, identical for identical inputs."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return canonical_safetensors(save(tensors, metadata=metadata))


def model_bytes(model: RichBoyNet) -> bytes:
    """A plain RichBoyNet state_dict as safetensors bytes, its hidden sizes in the metadata."""
    config = {"hidden_size_1": model.linear1.out_features, "hidden_size_2": model.linear2.out_features}
    return safetensors_bytes(model.state_dict(), {"model": "RichBoyNet", "config": json.dumps(config, sort_keys=True)})


def save_model(model: RichBoyNet, path: str | Path) -> None:
    """Save a plain RichBoyNet (see model_bytes) atomically."""
    write_bytes(path, model_bytes(model))


def load_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
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
