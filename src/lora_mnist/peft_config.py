"""PEFT's adapter format without torch (adapter.py writes it): reading adapter_config.json (only the LoRA settings
we support, anything else an ArtifactError naming the key), the scale it implies and the tensors it must hold."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lora_mnist.artifacts import read_json
from lora_mnist.errors import ArtifactError
from lora_mnist.names import ADAPTER_CONFIG, ADAPTER_WEIGHTS, peft_key

# PEFT settings that would change the forward pass; we only support their neutral value.
NEUTRAL = {"bias": "none", "fan_in_fan_out": False, "use_dora": False, "lora_bias": False,
           "rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None, "modules_to_save": None,
           "layer_replication": None, "target_parameters": None}


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    """Read adapter_config.json, raising ArtifactError if it is missing or not a JSON object."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    config = read_json(path)
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def adapter_settings(config: dict[str, Any], path: str | Path) -> dict[str, Any]:
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


def load_settings(adapter_dir: str | Path) -> dict[str, Any]:
    """The apply_lora() settings of the adapter in `adapter_dir`, validated."""
    return adapter_settings(read_adapter_config(adapter_dir), Path(adapter_dir) / ADAPTER_CONFIG)


def adapter_bytes(adapter_dir: str | Path) -> int:
    """Bytes of what PEFT loads from an adapter directory: the config and the tensors."""
    return sum((Path(adapter_dir) / name).stat().st_size for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS))


def lora_scale(alpha: float, rank: int, scaling: str) -> float:
    """The factor on B @ A: alpha / rank ("standard") or alpha / sqrt(rank) ("rslora", PEFT's use_rslora)."""
    return alpha / (rank if scaling == "standard" else math.sqrt(rank))


def adapter_shapes(settings: dict[str, Any], layers: dict[str, tuple[int, int]], source: str | Path
                   ) -> dict[str, tuple[int, int]]:
    """The tensors an adapter with `settings` must hold for a model whose Linear layers are `layers` (name ->
    (in, out)): A (r, in) and B (out, r) per target module, under PEFT's keys."""
    unknown = [t for t in settings["targets"] if t not in layers]
    if unknown:
        raise ArtifactError(f"{source}: target_modules {unknown} are not Linear layers of the model {list(layers)}")
    r = settings["rank"]
    shapes = {}
    for name in settings["targets"]:
        n_in, n_out = layers[name]
        shapes[peft_key(name, "A")], shapes[peft_key(name, "B")] = (r, n_in), (n_out, r)
    return shapes
