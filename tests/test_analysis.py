"""Effective rank and relative norm on updates of known rank (numpy, as the analyze stage runs them)."""

import numpy as np
import pytest
import torch

from lora_mnist.analysis import (
    TOP_K, effective_rank, full_spectra, lora_spectra, lowrank_singular_values, singular_values, spectrum_stats,
)
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
        stats, top = spectrum_stats(singular_values(delta), base)
        assert stats["rank_99"] <= r and stats["rank_90"] <= r
        assert len(top) == 30 and top == sorted(top, reverse=True)
        assert abs(stats["rel_norm"] - np.linalg.norm(delta) / np.linalg.norm(base)) < 1e-6
    full = rng.standard_normal((40, 30)).astype(np.float32)
    assert spectrum_stats(singular_values(full), base)[0]["rank_90"] > 10  # a random full-rank update spreads
    assert np.allclose(singular_values(full), torch.linalg.svdvals(torch.from_numpy(full).double()).numpy())


def test_lowrank_singular_values_equal_those_of_the_product():
    rng = np.random.default_rng(1)
    for r in (1, 4):
        b, a = rng.standard_normal((50, r)), rng.standard_normal((r, 70))
        s = lowrank_singular_values(b, a, 0.5)
        assert len(s) == r
        assert np.allclose(s, singular_values(0.5 * b @ a)[:r], rtol=1e-10, atol=0)


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_spectra_match_merge_and_the_weight_difference():
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
    full_s, lora_s = full_spectra(_state(base), _state(full)), lora_spectra(_state(base), adapter, settings)
    for name in ("linear1", "linear2", "linear3"):
        w0 = getattr(base, name).weight.detach().double().numpy()
        expected = singular_values(getattr(full, name).weight.detach().double().numpy() - w0)[:TOP_K]
        assert np.array_equal(full_s[name][1], expected)
        merged_delta = getattr(merged, name).weight.detach().double().numpy() - w0
        assert np.allclose(lora_s[name][1], singular_values(merged_delta)[: len(lora_s[name][1])], atol=1e-5)
        assert lora_s[name][0]["rel_norm"] == pytest.approx(np.linalg.norm(merged_delta) / np.linalg.norm(w0), rel=1e-5)
    assert lora_s["linear2"][0]["rank_99"] == 0 and lora_s["linear2"][0]["rel_norm"] == 0  # untargeted: no update
    assert lora_s["linear1"][0]["rank_99"] <= 2
    bad = {**adapter, peft_key("linear3", "A"): np.zeros((2, 7), np.float32)}
    with pytest.raises(ArtifactError, match=r"ad: tensor 'base_model.model.linear3.lora_A.weight' has shape \(2, 7\), "
                                            r"expected \(2, 8\)"):
        lora_spectra(_state(base), bad, settings, ("b", "ad"))
    del bad[peft_key("linear3", "A")]
    with pytest.raises(ArtifactError, match="ad: missing tensor 'base_model.model.linear3.lora_A.weight'"):
        lora_spectra(_state(base), bad, settings, ("b", "ad"))
    with pytest.raises(ArtifactError, match=r"ad: target_modules \['linear9'\] are not Linear layers"):
        lora_spectra(_state(base), adapter, {**settings, "targets": ["linear9"]}, ("b", "ad"))
    full_state = {**_state(full), "linear2.weight": np.zeros((3, 3), np.float32)}
    with pytest.raises(ArtifactError, match=r"f: tensor 'linear2.weight' has shape \(3, 3\), expected \(8, 16\)"):
        full_spectra(_state(base), full_state, ("b", "f"))


def test_plot_files_keep_every_bit_and_row():
    import json

    from lora_mnist.plots import spectrum_rows, write_confusion, write_losses

    losses = [2.3152, 0.1 + 0.2, float(np.float32(1 / 3))]
    write_losses(path := __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "loss.tsv", losses)
    lines = path.read_text().splitlines()
    assert lines[0] == "step\tloss" and [float(line.split("\t")[1]) for line in lines[1:]] == losses
    write_confusion(path.parent / "c.json", [1, 2], [1, 3])
    assert json.loads((path.parent / "c.json").read_text()) == [{"actual": 1, "predicted": 1},
                                                               {"actual": 2, "predicted": 3}]
    assert spectrum_rows([3.0, 1.0]) == [{"k": 1, "sigma": 3.0}, {"k": 2, "sigma": 1.0}]
