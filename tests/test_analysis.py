"""Effective rank and relative norm on updates of known rank."""

import torch

from lora_mnist.analysis import effective_rank, singular_values, update_stats


def test_effective_rank_of_known_spectra():
    assert effective_rank(torch.tensor([3.0, 0.0, 0.0]), 0.9) == 1
    assert effective_rank(torch.tensor([1.0, 1.0, 1.0, 1.0]), 0.9) == 4  # 3/4 of the energy < 0.9
    assert effective_rank(torch.tensor([1.0, 1.0, 1.0, 1.0]), 0.75) == 3
    assert effective_rank(torch.zeros(5), 0.9) == 0


def test_rank_r_update_has_effective_rank_at_most_r():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 30, generator=g)
    for r in (1, 3):
        delta = torch.randn(40, r, generator=g) @ torch.randn(r, 30, generator=g)
        stats, top = update_stats(delta, base)
        assert stats["rank_99"] <= r and stats["rank_90"] <= r
        assert len(top) == 30 and top == sorted(top, reverse=True)
        assert abs(stats["rel_norm"] - (delta.norm() / base.norm()).item()) < 1e-6
    full = torch.randn(40, 30, generator=g)
    assert update_stats(full, base)[0]["rank_90"] > 10  # a random full-rank update spreads its energy
    assert torch.allclose(singular_values(full), torch.linalg.svdvals(full.double()))
