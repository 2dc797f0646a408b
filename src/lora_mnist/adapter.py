"""Save and load LoRA adapters in PEFT's on-disk format (adapter_config.json + adapter_model.safetensors).

A PEFT user can load our adapter with `PeftModel.from_pretrained(base, adapter_dir)`. Note PEFT's own
"gaussian" init uses std 1/r (ours, the seed's, uses std 1); that only matters if PEFT re-initialises,
never when it loads the saved tensors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from lora_mnist.artifacts import atomic_dir, read_json, write_bytes, write_json
from lora_mnist.checkpoint import safetensors_bytes
from lora_mnist.errors import ArtifactError, ConfigError
from lora_mnist.lora import apply_lora, lora_layers

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."  # PEFT's prefix for the wrapped model's modules
# PEFT settings that would change the forward pass; we only support their neutral value.
NEUTRAL = {"bias": "none", "fan_in_fan_out": False, "use_dora": False, "lora_bias": False,
           "rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None, "modules_to_save": None,
           "layer_replication": None, "target_parameters": None}


def _tensor_key(module: str, part: str) -> str:
    return f"{KEY_PREFIX}{module}.lora_{part}.weight"  # part is "A" (r, in) or "B" (out, r)


def save_adapter(model: nn.Module, out_dir: str | Path) -> None:
    """Write the model's LoRA adapter to `out_dir` atomically, byte-identical for identical tensors."""
    layers = lora_layers(model)
    if not layers:
        raise ArtifactError(f"cannot save adapter to {out_dir}: the model has no LoRA layers")
    settings = {(lora.rank, lora.alpha, lora.init, lora.scaling) for lora in layers.values()}
    if len(settings) > 1:
        raise ArtifactError(f"cannot save adapter to {out_dir}: layers differ in rank/alpha/init/scaling "
                            f"{sorted(settings)}; the format holds one setting for all layers")
    first = next(iter(layers.values()))
    config = {
        "peft_type": "LORA",
        "r": first.rank,
        "lora_alpha": first.alpha,
        "target_modules": list(layers),  # module definition order: canonical, so bytes are stable
        "use_rslora": first.scaling == "rslora",
        "init_lora_weights": "gaussian" if first.init == "gaussian" else True,
        "bias": "none",
        "lora_dropout": 0.0,
        "fan_in_fan_out": False,
        "base_model_name_or_path": None,
        "task_type": None,
        "inference_mode": True,
    }
    tensors = {}
    for name, lora in layers.items():
        tensors[_tensor_key(name, "A")] = lora.lora_A.detach().cpu().contiguous()
        tensors[_tensor_key(name, "B")] = lora.lora_B.detach().cpu().contiguous()
    metadata = {"format": "pt", "init": first.init, "scaling": first.scaling}
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / CONFIG_FILE, config)
        write_bytes(tmp / WEIGHTS_FILE, safetensors_bytes(tensors, metadata))


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    """Read adapter_config.json, raising ArtifactError if it is missing or not a JSON object."""
    path = Path(adapter_dir) / CONFIG_FILE
    config = read_json(path)
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def _lora_settings(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """Validate a PEFT LoRA config and turn it into apply_lora() keyword arguments."""
    def bad(key: str, allowed: str) -> ArtifactError:
        return ArtifactError(f"{path}: {key}={config.get(key)!r} is invalid: allowed is {allowed}")

    if config.get("peft_type") != "LORA":
        raise bad("peft_type", "'LORA'")
    r, alpha, targets = config.get("r"), config.get("lora_alpha"), config.get("target_modules")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise bad("r", "an int >= 1")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0 < alpha < math.inf):
        raise bad("lora_alpha", "a finite number > 0")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise bad("target_modules", "a non-empty list of module names")
    init = {"gaussian": "gaussian", True: "kaiming"}.get(config.get("init_lora_weights", True))
    if init is None:
        raise bad("init_lora_weights", "'gaussian' or true")
    if not isinstance(config.get("use_rslora", False), bool):
        raise bad("use_rslora", "true or false")
    for key, neutral in NEUTRAL.items():
        if config.get(key, neutral) not in (neutral, None):
            raise bad(key, repr(neutral))
    scaling = "rslora" if config.get("use_rslora", False) else "standard"
    return {"targets": targets, "rank": r, "alpha": alpha, "init": init, "scaling": scaling}


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> None:
    """Apply LoRA to `model` as the adapter's config says and load its tensors (safetensors, no pickle).

    Everything is checked before the model is touched, so a bad adapter leaves `model` unchanged.
    """
    adapter_dir = Path(adapter_dir)
    config_path, weights_path = adapter_dir / CONFIG_FILE, adapter_dir / WEIGHTS_FILE
    settings = _lora_settings(read_adapter_config(adapter_dir), config_path)
    if not weights_path.is_file():
        raise ArtifactError(f"{weights_path}: file not found")
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights_path}: not a readable safetensors file ({exc})") from None

    modules = dict(model.named_modules())
    expected = {}
    for name in settings["targets"]:
        layer = modules.get(name)
        if not isinstance(layer, nn.Linear):
            raise ArtifactError(f"{config_path}: target module {name!r} is not a Linear layer of the model")
        expected[_tensor_key(name, "A")] = (settings["rank"], layer.in_features)
        expected[_tensor_key(name, "B")] = (layer.out_features, settings["rank"])
    for key in sorted(expected.keys() - tensors.keys()):
        raise ArtifactError(f"{weights_path}: missing tensor {key!r}")
    for key in sorted(tensors.keys() - expected.keys()):
        raise ArtifactError(f"{weights_path}: unexpected tensor {key!r}")
    for key, shape in expected.items():
        tensor = tensors[key]
        weight_dtype = model.get_submodule(key[len(KEY_PREFIX):].split(".lora_")[0]).weight.dtype
        if tuple(tensor.shape) != shape or tensor.dtype != weight_dtype:  # copy_ would cast silently
            raise ArtifactError(f"{weights_path}: tensor {key!r} has shape {tuple(tensor.shape)} "
                                f"({tensor.dtype}), expected {shape} ({weight_dtype})")

    try:
        # A throwaway generator: the initial A is overwritten, so don't consume the global RNG for it.
        apply_lora(model, **settings, generator=torch.Generator().manual_seed(0))
    except ConfigError as exc:
        raise ArtifactError(f"{config_path}: cannot apply this adapter to the model: {exc}") from None
    layers = lora_layers(model)
    with torch.no_grad():
        for name in settings["targets"]:
            layers[name].lora_A.copy_(tensors[_tensor_key(name, "A")])
            layers[name].lora_B.copy_(tensors[_tensor_key(name, "B")])
