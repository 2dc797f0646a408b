"""The low-rank hypothesis, tested: singular-value spectra of real weight updates."""

from __future__ import annotations

import torch
from torch import nn

from lora_mnist.config import LINEAR_NAMES
from lora_mnist.lora import lora_layers

TOP_K = 64  # singular values kept for the spectrum plot


def singular_values(delta: torch.Tensor) -> torch.Tensor:
    """Singular values of an update (out, in), descending, in float64 for a clean tail."""
    return torch.linalg.svdvals(delta.to(torch.float64))


def effective_rank(s: torch.Tensor, energy: float) -> int:
    """Fewest singular values whose squares hold `energy` of the total (0 for a zero update)."""
    power = s.square()
    total = power.sum()
    if total == 0:
        return 0
    share = power.cumsum(0) / total
    return int((share < energy - 1e-12).sum().item()) + 1


def update_stats(delta: torch.Tensor, base: torch.Tensor) -> tuple[dict[str, float | int], list[float]]:
    """Effective ranks (90 % / 99 % energy), relative size ||dW|| / ||W|| and the top spectrum."""
    delta, base = delta.detach(), base.detach()
    s = singular_values(delta)
    stats = {
        "rank_90": effective_rank(s, 0.90),
        "rank_99": effective_rank(s, 0.99),
        "top1_energy": float(s[0].square() / s.square().sum()) if s.square().sum() > 0 else 0.0,
        "rel_norm": float(torch.linalg.norm(delta.double()) / torch.linalg.norm(base.double())),
    }
    return stats, s[:TOP_K].tolist()


@torch.no_grad()
def layer_updates(base: nn.Module, full: nn.Module, lora_model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """dW (out, in) per Linear layer: full fine-tuning W_full - W_0, and LoRA scale * B @ A (0 if untargeted)."""
    adapters = lora_layers(lora_model)
    updates = {}
    for name in LINEAR_NAMES:
        w0 = getattr(base, name).weight
        lora = adapters.get(name)
        updates[name] = {
            "full": getattr(full, name).weight - w0,
            "lora": lora.lora_B @ lora.lora_A * lora.scale if lora else torch.zeros_like(w0),  # (out, r) @ (r, in)
        }
    return updates
