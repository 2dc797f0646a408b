"""LoRA via torch.nn.utils.parametrize: weight = W_frozen + (B @ A) * scale, with W_frozen untouched.

Follows the seed (hkproj/pytorch-lora) with its oddities fixed: the seed named `layer.weight.shape` as
`(features_in, features_out)` although it is `(out, in)`, and reshaped `B @ A` with a no-op `.view`.
Enabling, disabling and merging are explicit calls, never side effects of `train()`/`eval()`. Arguments are
trusted: params are validated once, in config.py, and adapter files where peft_format.py reads them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from lora_mnist.base.model import RichBoyNet
from lora_mnist.lora.peft_format import LORA_MARK, lora_scale

ORIGINAL_SUFFIX = ".parametrizations.weight.original"  # where parametrize keeps the frozen weight


class LoRAParametrization(nn.Module):
    """Adds the low-rank update (B @ A) * scale to a Linear weight of shape (out, in) when enabled."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        alpha: float,
        init: str = "gaussian",
        scaling: str = "standard",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.rank, self.alpha, self.init, self.scaling = rank, float(alpha), init, scaling
        self.scale = lora_scale(self.alpha, rank, scaling)
        self.enabled = True
        self.impl = "parametrize"  # or "lowrank": _lowrank_hook adds the update instead (set_lora_impl)
        # Draw A on the CPU in float32 so the same generator gives the same A on every device.
        a = torch.empty(rank, in_features)  # (r, in)
        if init == "gaussian":
            nn.init.normal_(a, mean=0.0, std=1.0, generator=generator)
        else:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        self.lora_A = nn.Parameter(a.to(device=device, dtype=dtype))
        # B = 0 makes B @ A = 0, so the adapted model equals the base model at step 0.
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))  # (out, r)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """Return the effective weight (out, in): W + (B @ A) * scale if enabled, else W itself."""
        if not self.enabled or self.impl == "lowrank":
            return weight
        return weight + self.lora_B @ self.lora_A * self.scale

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, init={self.init!r}, scaling={self.scaling!r}"


def _lora_of(module: nn.Module) -> LoRAParametrization | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    found = [p for p in module.parametrizations.weight if isinstance(p, LoRAParametrization)]
    return found[0] if found else None


def apply_lora(
    model: nn.Module,
    targets: Sequence[str],
    rank: int,
    alpha: float,
    init: str = "gaussian",
    scaling: str = "standard",
    generator: torch.Generator | None = None,
) -> None:
    """Register LoRA on the weight of each target Linear, in the order given (A is drawn in that order)."""
    for name in targets:
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear) and _lora_of(layer) is None, f"{name}: not a Linear without LoRA"
        w = layer.weight
        lora = LoRAParametrization(layer.in_features, layer.out_features, rank, alpha, init, scaling,
                                   generator=generator, device=w.device, dtype=w.dtype)
        parametrize.register_parametrization(layer, "weight", lora)
        layer.register_forward_hook(_lowrank_hook)


def _lowrank_hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    """impl "lowrank": add x @ A.T @ B.T * scale to the output, never materialising B @ A (out, in)."""
    lora = _lora_of(layer)
    if lora is None or not lora.enabled or lora.impl != "lowrank":
        return output
    return output + (inputs[0] @ lora.lora_A.T) @ lora.lora_B.T * lora.scale  # (b, in) -> (b, r) -> (b, out)


def set_lora_impl(model: nn.Module, impl: str) -> None:
    """How the update enters the forward pass: "parametrize" (W + B @ A, the seed's) or "lowrank"."""
    for lora in lora_layers(model).values():
        lora.impl = impl


def lora_layers(model: nn.Module) -> dict[str, LoRAParametrization]:
    """Map each LoRA-adapted module name to its parametrization, in module definition order."""
    found = {name: _lora_of(module) for name, module in model.named_modules()}
    return {name: lora for name, lora in found.items() if lora is not None}


def set_lora_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch every LoRA update on or off (a no-op on a model without LoRA)."""
    for lora in lora_layers(model).values():
        lora.enabled = enabled


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with LoRA off, then restore each layer's previous state (even on error)."""
    layers = lora_layers(model)
    previous = {name: lora.enabled for name, lora in layers.items()}
    try:
        set_lora_enabled(model, False)
        yield model
    finally:
        for name, lora in layers.items():
            lora.enabled = previous[name]


def freeze_non_lora(model: nn.Module) -> None:
    """Make LoRA parameters trainable and everything else (frozen weights and biases) not."""
    for name, p in model.named_parameters():
        p.requires_grad_(LORA_MARK in name)


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that require grad."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def plain_name(key: str) -> str | None:
    """Plain RichBoyNet name of a LoRA model's state_dict key (None for LoRA tensors)."""
    if LORA_MARK in key:
        return None
    return key.replace(ORIGINAL_SUFFIX, ".weight")


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The frozen base weights under plain names (`linear1.weight`, ...), sharing storage like state_dict."""
    return {name: tensor for key, tensor in model.state_dict().items() if (name := plain_name(key)) is not None}


def count_parameters(model: nn.Module) -> dict[str, int | float]:
    """Non-LoRA parameters (frozen weights and biases), LoRA ones, and LoRA as a percentage of the others."""
    sizes = [(LORA_MARK in name, p.numel()) for name, p in model.named_parameters()]
    original = sum(n for is_lora, n in sizes if not is_lora)
    lora = sum(n for is_lora, n in sizes if is_lora)
    return {"original": original, "lora": lora, "increment_pct": 100 * lora / original if original else 0.0}


@torch.no_grad()
def merge(model: RichBoyNet) -> RichBoyNet:
    """Return a new plain RichBoyNet with W + (B @ A) * scale folded in; `model` is left unchanged.

    The LoRA update is merged whether or not it is currently enabled: merging means "keep the adapter".
    """
    layers = lora_layers(model)
    state = {}
    for key, tensor in base_state_dict(model).items():
        name, kind = key.rsplit(".", 1)
        if kind == "weight" and name in layers:
            lora = layers[name]
            tensor = tensor + lora.lora_B @ lora.lora_A * lora.scale  # same expression as forward()
        state[key] = tensor.detach().clone()
    # Build on the meta device so the new model draws nothing from the global RNG.
    with torch.device("meta"):
        merged = RichBoyNet(model.linear1.out_features, model.linear2.out_features)
    merged.load_state_dict(state, assign=True)
    return merged.train(model.training)
