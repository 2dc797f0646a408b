"""The low-rank hypothesis, tested: singular-value spectra of real weight updates."""

from __future__ import annotations

import torch

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
    s = singular_values(delta)
    stats = {
        "rank_90": effective_rank(s, 0.90),
        "rank_99": effective_rank(s, 0.99),
        "top1_energy": float(s[0].square() / s.square().sum()) if s.square().sum() > 0 else 0.0,
        "rel_norm": float(torch.linalg.norm(delta.double()) / torch.linalg.norm(base.double())),
    }
    return stats, s[:TOP_K].tolist()
