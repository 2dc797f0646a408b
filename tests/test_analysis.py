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


def test_layer_updates_match_merge_and_the_weight_difference():
    from lora_mnist.analysis import layer_updates
    from lora_mnist.lora import apply_lora, merge
    from lora_mnist.model import RichBoyNet

    torch.manual_seed(0)
    base, full = RichBoyNet(16, 8), RichBoyNet(16, 8)
    lora_model = RichBoyNet(16, 8)
    lora_model.load_state_dict(base.state_dict())
    apply_lora(lora_model, ["linear1", "linear3"], rank=2, alpha=3.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name in ("linear1", "linear3"):
            torch.nn.init.normal_(getattr(lora_model, name).parametrizations.weight[0].lora_B)
    merged = merge(lora_model)
    updates = layer_updates(base, full, lora_model)
    for name in ("linear1", "linear2", "linear3"):
        w0 = getattr(base, name).weight
        assert torch.equal(updates[name]["full"], getattr(full, name).weight - w0)
        assert torch.allclose(updates[name]["lora"], getattr(merged, name).weight - w0, atol=1e-6)
    assert not updates["linear2"]["lora"].any()  # untargeted layer: no LoRA update
    assert update_stats(updates["linear1"]["lora"], base.linear1.weight)[0]["rank_99"] <= 2
