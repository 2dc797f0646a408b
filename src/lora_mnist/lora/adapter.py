"""LoRA adapters in PEFT's on-disk format (adapter_config.json + adapter_model.safetensors), with the record of what
training left (training.json), saved from and loaded into a live model (export.py builds the full models on demand).

A PEFT user can load our adapter with `PeftModel.from_pretrained(base, adapter_dir)`. PEFT's own "gaussian" init
uses std 1/r (ours, the seed's, uses std 1); that only matters if PEFT re-initialises, never when it loads the
saved tensors. Reading an adapter's files without a model is torch-free, in peft_format.py (verify uses it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from lora_mnist.artifacts import (atomic_dir, check_shapes, digest, json_bytes, read_safetensors, safetensors_bytes,
                                  write_bytes)
from lora_mnist.cli import ArtifactError
from lora_mnist.lora.layer import apply_lora, base_state_dict, lora_layers, trainable_parameter_names
from lora_mnist.lora.peft_format import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, LORA_MARK, PEFT_PREFIX, RECORD,
                                         adapter_shapes, load_settings, peft_key, peft_name)


def training_record(model: nn.Module, digits: list[int], train_size: int, losses: list[float]) -> dict:
    """What training left in memory, as sha256 digests: the frozen base tensors (plain names, to compare with the
    snapshot's manifest), the LoRA factors (PEFT names, to compare with the saved adapter) and which parameters
    were trainable."""
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    return {
        "digits": digits, "train_size": train_size, "loss": {"first": losses[0], "last": losses[-1]},
        "base_sha256": {k: digest(v.detach().cpu().numpy()) for k, v in sorted(base_state_dict(model).items())},
        "adapter_sha256": dict(sorted((peft_name(k), digest(v)) for k, v in state.items() if LORA_MARK in k)),
        "trainable": trainable_parameter_names(model),
    }


def save_adapter(model: nn.Module, out_dir: str | Path, record: dict) -> None:
    """Write the model's LoRA adapter and its training record to `out_dir` in one atomic step, byte-identical for
    identical tensors."""
    layers = lora_layers(model)
    assert layers, "save_adapter: the model carries no LoRA layers"
    first = next(iter(layers.values()))  # one setting for all layers: apply_lora gives them one
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
        tensors[peft_key(name, "A")] = lora.lora_A
        tensors[peft_key(name, "B")] = lora.lora_B
    metadata = {"format": "pt", "init": first.init, "scaling": first.scaling}
    with atomic_dir(out_dir) as tmp:
        write_bytes(tmp / ADAPTER_CONFIG, json_bytes(config))
        write_bytes(tmp / ADAPTER_WEIGHTS, safetensors_bytes(tensors, metadata))
        write_bytes(tmp / RECORD, json_bytes(record))


def read_adapter(model: nn.Module, adapter_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The adapter's settings and tensors (safetensors, no pickle), checked against `model`'s Linear layers:
    exactly PEFT's A (r, in) and B (out, r) per target module, in the dtype of the weight they add to."""
    adapter_dir = Path(adapter_dir)
    settings = load_settings(adapter_dir)
    weights_path = adapter_dir / ADAPTER_WEIGHTS
    tensors, _ = read_safetensors(weights_path, framework="pt")
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    layers = {name: (m.in_features, m.out_features) for name, m in linears.items()}
    check_shapes({k: tuple(v.shape) for k, v in tensors.items()},
                 adapter_shapes(settings, layers, adapter_dir / ADAPTER_CONFIG), weights_path)
    for key, tensor in tensors.items():
        layer = linears[key[len(PEFT_PREFIX):].split(".lora_")[0]]
        # The frozen weight's dtype, without computing W + B @ A on a layer that already carries LoRA.
        weight = layer.parametrizations.weight.original if parametrize.is_parametrized(layer, "weight") \
            else layer.weight
        if tensor.dtype != weight.dtype:  # copy_ would cast silently
            raise ArtifactError(f"{weights_path}: tensor {key!r} is {tensor.dtype}, the model's weight {weight.dtype}")
    return settings, tensors


def _copy_factors(model: nn.Module, targets: list[str], tensors: dict[str, torch.Tensor]) -> None:
    layers = lora_layers(model)
    with torch.no_grad():
        for name in targets:
            layers[name].lora_A.copy_(tensors[peft_key(name, "A")])
            layers[name].lora_B.copy_(tensors[peft_key(name, "B")])


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> None:
    """Apply LoRA to `model` as the adapter's config says and load its tensors. Everything is checked before the
    model is touched, so a bad adapter leaves `model` unchanged."""
    settings, tensors = read_adapter(model, adapter_dir)
    if lora_layers(model):
        raise ArtifactError(f"{adapter_dir}: the model already carries an adapter: switch_adapter replaces it")
    # A throwaway generator: the initial A is overwritten, so don't consume the global RNG for it.
    apply_lora(model, **settings, generator=torch.Generator().manual_seed(0))
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
