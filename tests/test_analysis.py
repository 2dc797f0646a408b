"""Effective rank and relative norm on updates of known rank (numpy, as the analyze stage runs them)."""

import numpy as np
import pytest
import torch

from lora_mnist.analysis import effective_rank, layer_updates, singular_values, update_stats
from lora_mnist.errors import ArtifactError
from lora_mnist.names import peft_key


def test_effective_rank_of_known_spectra():
    assert effective_rank(np.array([3.0, 0.0, 0.0]), 0.9) == 1
    assert effective_rank(np.array([1.0, 1.0, 1.0, 1.0]), 0.9) == 4  # 3/4 of the energy < 0.9
    assert effective_rank(np.array([1.0, 1.0, 1.0, 1.0]), 0.75) == 3
    assert effective_rank(np.zeros(5), 0.9) == 0


def test_rank_r_update_has_effective_rank_at_most_r():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 30)).astype(np.float32)
    for r in (1, 3):
        delta = (rng.standard_normal((40, r)) @ rng.standard_normal((r, 30))).astype(np.float32)
        stats, top = update_stats(delta, base)
        assert stats["rank_99"] <= r and stats["rank_90"] <= r
        assert len(top) == 30 and top == sorted(top, reverse=True)
        assert abs(stats["rel_norm"] - np.linalg.norm(delta) / np.linalg.norm(base)) < 1e-6
    full = rng.standard_normal((40, 30)).astype(np.float32)
    assert update_stats(full, base)[0]["rank_90"] > 10  # a random full-rank update spreads its energy
    assert np.allclose(singular_values(full), torch.linalg.svdvals(torch.from_numpy(full).double()).numpy())


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_layer_updates_match_merge_and_the_weight_difference():
    from lora_mnist.lora import apply_lora, lora_layers, merge
    from lora_mnist.model import RichBoyNet

    torch.manual_seed(0)
    base, full = RichBoyNet(16, 8), RichBoyNet(16, 8)
    lora_model = RichBoyNet(16, 8)
    lora_model.load_state_dict(base.state_dict())
    settings = {"targets": ["linear1", "linear3"], "rank": 2, "alpha": 3.0, "scaling": "standard"}
    apply_lora(lora_model, settings["targets"], rank=2, alpha=3.0, generator=torch.Generator().manual_seed(0))
    adapter = {}
    with torch.no_grad():
        for name, lora in lora_layers(lora_model).items():
            torch.nn.init.normal_(lora.lora_B)
            adapter[peft_key(name, "A")], adapter[peft_key(name, "B")] = lora.lora_A.numpy(), lora.lora_B.numpy()
    merged = merge(lora_model)
    updates = layer_updates(_state(base), _state(full), adapter, settings)
    for name in ("linear1", "linear2", "linear3"):
        w0 = getattr(base, name).weight.detach().double().numpy()
        assert np.array_equal(updates[name]["full"], getattr(full, name).weight.detach().double().numpy() - w0)
        assert np.allclose(updates[name]["lora"], getattr(merged, name).weight.detach().double().numpy() - w0, atol=1e-6)
    assert not updates["linear2"]["lora"].any()  # untargeted layer: no LoRA update
    assert update_stats(updates["linear1"]["lora"], _state(base)["linear1.weight"])[0]["rank_99"] <= 2
    bad = {**adapter, peft_key("linear3", "A"): np.zeros((2, 7), np.float32)}
    with pytest.raises(ArtifactError, match=r"ad: tensor 'base_model.model.linear3.lora_A.weight' has shape \(2, 7\), "
                                            r"expected \(2, 8\)"):
        layer_updates(_state(base), _state(full), bad, settings, ("b", "f", "ad"))
    del bad[peft_key("linear3", "A")]
    with pytest.raises(ArtifactError, match="ad: tensors .* do not match its config"):
        layer_updates(_state(base), _state(full), bad, settings, ("b", "f", "ad"))
    with pytest.raises(ArtifactError, match=r"ad: target_modules \['linear9'\] are not layers"):
        layer_updates(_state(base), _state(full), adapter, {**settings, "targets": ["linear9"]}, ("b", "f", "ad"))
    full_state = {**_state(full), "linear2.weight": np.zeros((3, 3), np.float32)}
    with pytest.raises(ArtifactError, match=r"f: tensor 'linear2.weight' has shape \(3, 3\), expected \(8, 16\)"):
        layer_updates(_state(base), full_state, adapter, settings, ("b", "f", "ad"))
