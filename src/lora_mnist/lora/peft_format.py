"""An adapter directory as files, torch-free: PEFT's file names and tensor keys, its LoRA config validated into
apply_lora() settings and the tensor shapes those imply, and our training record beside them. verify and the
reports read adapters through it; layer.py and adapter.py share its names (LORA_MARK, lora_scale)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lora_mnist.artifacts import read_json
from lora_mnist.cli import ArtifactError

LORA_MARK = "lora_"  # in the name of every LoRA tensor, and of no other
PEFT_PREFIX = "base_model.model."  # PEFT's prefix for the wrapped model's modules
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's file names inside an adapter directory
ADAPTER_WEIGHTS = "adapter_model.safetensors"
RECORD = "training.json"  # ours, beside them (PEFT ignores it): what training left, as sha256 digests
# PEFT settings that would change the forward pass; we only support their neutral value.
NEUTRAL = {"bias": "none", "fan_in_fan_out": False, "use_dora": False, "lora_bias": False,
           "rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None, "modules_to_save": None,
           "layer_replication": None, "target_parameters": None}


def peft_key(module: str, part: str) -> str:
    """PEFT adapter key of LoRA factor `part` ("A" (r, in) or "B" (out, r)) of `module`."""
    return f"{PEFT_PREFIX}{module}.lora_{part}.weight"


def peft_name(state_key: str) -> str:
    """PEFT key of a LoRA model's state_dict key such as `linear1.parametrizations.weight.0.lora_A`."""
    module, _, part = state_key.partition(".parametrizations.")
    return peft_key(module, part.rsplit(LORA_MARK, 1)[-1])


def lora_scale(alpha: float, rank: int, scaling: str) -> float:
    """The factor on B @ A: alpha / rank ("standard") or alpha / sqrt(rank) ("rslora", PEFT's use_rslora)."""
    return alpha / (rank if scaling == "standard" else math.sqrt(rank))


def adapter_settings(config: Any, path: str | Path) -> dict[str, Any]:
    """Validate a PEFT LoRA config (the JSON object of adapter_config.json) and turn it into apply_lora() keyword
    arguments; anything we do not support is an ArtifactError naming the key."""
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(config).__name__}")

    def bad(key: str, allowed: str) -> ArtifactError:
        return ArtifactError(f"{path}: {key}={config.get(key)!r} is invalid: allowed is {allowed}")

    if config.get("peft_type") != "LORA":
        raise bad("peft_type", "'LORA'")
    r, alpha, targets = config.get("r"), config.get("lora_alpha"), config.get("target_modules")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise bad("r", "an int >= 1")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0 < alpha < math.inf):
        raise bad("lora_alpha", "a finite number > 0")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets) \
            or len(set(targets)) != len(targets):
        raise bad("target_modules", "a non-empty list of distinct module names")
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
    path = Path(adapter_dir) / ADAPTER_CONFIG
    return adapter_settings(read_json(path), path)


def adapter_shapes(settings: dict[str, Any], layers: dict[str, tuple[int, int]], source: str | Path
                   ) -> dict[str, tuple[int, int]]:
    """The tensors an adapter with `settings` must hold for a model whose Linear layers are `layers` (name ->
    (in, out)): A (r, in) and B (out, r) per target module, under PEFT's keys, r at most min(in, out)."""
    unknown = [t for t in settings["targets"] if t not in layers]
    if unknown:
        raise ArtifactError(f"{source}: target_modules {unknown} are not Linear layers of the model {list(layers)}")
    r = settings["rank"]
    shapes = {}
    for name in settings["targets"]:
        n_in, n_out = layers[name]
        if r > min(n_in, n_out):
            raise ArtifactError(f"{source}: r = {r} is invalid for {name!r} ({n_in} -> {n_out}): allowed is "
                                f"1 <= r <= {min(n_in, n_out)}")
        shapes[peft_key(name, "A")], shapes[peft_key(name, "B")] = (r, n_in), (n_out, r)
    return shapes


def adapter_bytes(adapter_dir: str | Path) -> int:
    """Bytes of what PEFT loads from an adapter directory: the config and the tensors."""
    return sum((Path(adapter_dir) / name).stat().st_size for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS))
