"""Save and load LoRA adapters in PEFT's on-disk format (adapter_config.json + adapter_model.safetensors).

A PEFT user can load our adapter with `PeftModel.from_pretrained(base, adapter_dir)`. Note PEFT's own
"gaussian" init uses std 1/r (ours, the seed's, uses std 1); that only matters if PEFT re-initialises,
never when it loads the saved tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils import parametrize

from lora_mnist.artifacts import atomic_dir, write_bytes, write_json
from lora_mnist.checkpoint import safetensors_bytes
from lora_mnist.errors import ArtifactError
from lora_mnist.integrity import check_shapes
from lora_mnist.lora import apply_lora, lora_layers
from lora_mnist.names import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX, peft_key
from lora_mnist.peft_config import adapter_shapes, load_settings


def save_adapter(model: nn.Module, out_dir: str | Path, extra: dict[str, bytes] | None = None) -> None:
    """Write the model's LoRA adapter to `out_dir` atomically, byte-identical for identical tensors; `extra`
    files (name -> bytes) go into the same directory, in the same atomic step (PEFT ignores them)."""
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
        tensors[peft_key(name, "A")] = lora.lora_A.detach().cpu().contiguous()
        tensors[peft_key(name, "B")] = lora.lora_B.detach().cpu().contiguous()
    metadata = {"format": "pt", "init": first.init, "scaling": first.scaling}
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / ADAPTER_CONFIG, config)
        write_bytes(tmp / ADAPTER_WEIGHTS, safetensors_bytes(tensors, metadata))
        for name, data in (extra or {}).items():
            write_bytes(tmp / name, data)


def read_adapter(model: nn.Module, adapter_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The adapter's settings and tensors (safetensors, no pickle), checked against `model`'s Linear layers:
    exactly PEFT's A (r, in) and B (out, r) per target module, in the dtype of the weight they add to."""
    adapter_dir = Path(adapter_dir)
    config_path, weights_path = adapter_dir / ADAPTER_CONFIG, adapter_dir / ADAPTER_WEIGHTS
    settings = load_settings(adapter_dir)
    if not weights_path.is_file():
        raise ArtifactError(f"{weights_path}: file not found")
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    layers = {name: (m.in_features, m.out_features) for name, m in linears.items()}
    check_shapes({k: tuple(v.shape) for k, v in tensors.items()}, adapter_shapes(settings, layers, config_path),
                 weights_path)
    for key, tensor in tensors.items():
        weight_dtype = _weight_dtype(linears[key[len(PEFT_PREFIX):].split(".lora_")[0]])
        if tensor.dtype != weight_dtype:  # copy_ would cast silently
            raise ArtifactError(f"{weights_path}: tensor {key!r} is {tensor.dtype}, the model's weight {weight_dtype}")
    return settings, tensors


def _weight_dtype(layer: nn.Linear) -> torch.dtype:
    """The dtype of a Linear layer's frozen weight, without computing W + B @ A when LoRA is already applied."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original.dtype
    return layer.weight.dtype


def _copy_factors(model: nn.Module, targets: list[str], tensors: dict[str, torch.Tensor]) -> None:
    layers = lora_layers(model)
    with torch.no_grad():
        for name in targets:
            layers[name].lora_A.copy_(tensors[peft_key(name, "A")])
            layers[name].lora_B.copy_(tensors[peft_key(name, "B")])


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> None:
    """Apply LoRA to `model` as the adapter's config says and load its tensors.

    Everything is checked before the model is touched, so a bad adapter leaves `model` unchanged.
    """
    settings, tensors = read_adapter(model, adapter_dir)
    try:
        # A throwaway generator: the initial A is overwritten, so don't consume the global RNG for it.
        apply_lora(model, **settings, generator=torch.Generator().manual_seed(0))
    except ValueError as exc:
        raise ArtifactError(f"{Path(adapter_dir) / ADAPTER_CONFIG}: cannot apply this adapter to the model: {exc}") from None
    _copy_factors(model, settings["targets"], tensors)


def switch_adapter(model: nn.Module, adapter_dir: str | Path) -> None:
    """Swap the LoRA factors of a model that already carries an adapter for those of another with the same
    layout (targets, rank, alpha, scaling): the frozen base is neither reloaded nor touched."""
    settings, tensors = read_adapter(model, adapter_dir)
    live = {(name, lora.rank, lora.alpha, lora.scaling) for name, lora in lora_layers(model).items()}
    wanted = {(name, settings["rank"], settings["alpha"], settings["scaling"]) for name in settings["targets"]}
    if live != wanted:
        raise ArtifactError(f"{adapter_dir}: its layout {sorted(wanted)} differs from the model's adapter "
                            f"{sorted(live)}; load it onto a fresh base with load_adapter")
    _copy_factors(model, settings["targets"], tensors)
