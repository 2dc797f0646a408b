"""Effective rank and relative norm on updates of known rank (numpy, as the analyze stage runs them)."""

import numpy as np
import pytest
import torch

from lora_mnist.cli import ArtifactError
from lora_mnist.lora.peft_format import peft_key
from lora_mnist.report.analyze import (
    TOP_K, effective_rank, full_report, full_spectra, lora_spectra, lora_vs_full, lowrank_singular_values,
    singular_values, spectrum_stats,
)


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
    from lora_mnist.base.model import RichBoyNet
    from lora_mnist.lora.layer import apply_lora, lora_layers, merge

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


def test_plot_files_keep_every_bit_and_row(tmp_path):
    import json

    from lora_mnist.base.train import write_losses
    from lora_mnist.report.plots import spectrum_rows, write_confusion

    losses = [2.3152, 0.1 + 0.2, float(np.float32(1 / 3))]
    write_losses(path := tmp_path / "loss.tsv", losses)
    lines = path.read_text().splitlines()
    assert lines[0] == "step\tloss" and [float(line.split("\t")[1]) for line in lines[1:]] == losses
    write_confusion(path.parent / "c.json", [1, 2], [1, 3])
    assert json.loads((path.parent / "c.json").read_text()) == [{"actual": 1, "predicted": 1},
                                                               {"actual": 2, "predicted": 3}]
    assert spectrum_rows([3.0, 1.0]) == [{"k": 1, "sigma": 3.0}, {"k": 2, "sigma": 1.0}]


def test_full_report_and_lora_vs_full_put_both_updates_side_by_side(tmp_path):
    """What the finetune stages write: full fine-tuning's spectra from arrays in memory, then LoRA's beside them
    from the saved files."""
    from lora_mnist.artifacts import read_safetensors, write_json
    from lora_mnist.base.model import RichBoyNet, save_model
    from lora_mnist.lora.adapter import save_adapter, training_record
    from lora_mnist.lora.layer import apply_lora, lora_layers
    from lora_mnist.lora.peft_format import adapter_bytes

    torch.manual_seed(0)
    base, full = RichBoyNet(16, 8), RichBoyNet(16, 8)
    save_model(base, tmp_path / "pretrained.safetensors")
    size = {"trainable_params": sum(p.numel() for p in full.parameters()), "bytes": 1234}
    report, tops = full_report(_state(base), _state(full), size, ("pre", "full"))
    expected = full_spectra(_state(base), _state(full))
    assert report["layers"] == {n: stats for n, (stats, _) in expected.items()}
    assert tops == report["spectra"] == {n: top for n, (_, top) in expected.items()}
    assert report["size"] == size
    bad = {**_state(full), "linear3.bias": np.zeros(3, np.float32)}
    with pytest.raises(ArtifactError, match=r"full: tensor 'linear3.bias' has shape \(3,\), expected \(10,\)"):
        full_report(_state(base), bad, size, ("pre", "full"))
    write_json(tmp_path / "full.json", report)

    apply_lora(base, ["linear2"], 2, 3.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora_layers(base)["linear2"].lora_B.normal_(generator=torch.Generator().manual_seed(1))
    save_adapter(base, tmp_path / "lora", training_record(base, [3], 10, [1.0]))
    out = lora_vs_full(tmp_path / "pretrained.safetensors", tmp_path / "lora", tmp_path / "full.json")
    adapter, _ = read_safetensors(tmp_path / "lora" / "adapter_model.safetensors")
    settings = {"targets": ["linear2"], "rank": 2, "alpha": 3.0, "scaling": "standard"}
    lora = lora_spectra(read_safetensors(tmp_path / "pretrained.safetensors")[0], adapter, settings)
    assert out["layers"] == {n: {"full": report["layers"][n], "lora": lora[n][0]} for n in lora}
    assert out["spectra"] == {"lora": {n: top for n, (_, top) in lora.items()}}
    assert out["layers"]["linear2"]["lora"]["rank_99"] == 2 and out["layers"]["linear1"]["lora"]["rank_99"] == 0
    assert out["size"] == {"lora": {"trainable_params": 2 * (16 + 8), "bytes": adapter_bytes(tmp_path / "lora")},
                           "full": size}


def test_figures_are_png_files_whose_bytes_depend_only_on_the_data(tmp_path):
    from lora_mnist.report.plots import write_spectra_png, write_zoo_heatmap

    wrong = {"base": list(range(10)), "adapter 3": [0] * 10, "sum 3+5": [9 - d for d in range(10)]}
    for name in ("a", "b"):
        write_spectra_png(tmp_path / f"spectra_{name}.png", {"linear1": {"full": [3.0, 1.0, 0.0]},
                                                             "linear2": {"full": [2.0], "lora": [1.0]}})
        write_zoo_heatmap(tmp_path / f"heatmap_{name}.png", wrong, {"adapter 3": [3], "sum 3+5": [3, 5]})
    for kind in ("spectra", "heatmap"):
        data = (tmp_path / f"{kind}_a.png").read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and data == (tmp_path / f"{kind}_b.png").read_bytes(), kind
    write_zoo_heatmap(tmp_path / "other.png", {**wrong, "adapter 3": [1] * 10}, {"adapter 3": [3], "sum 3+5": [3, 5]})
    assert (tmp_path / "other.png").read_bytes() != (tmp_path / "heatmap_a.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")) == []


def test_wrong_rows_give_each_digit_one_row_with_a_column_per_model():
    from lora_mnist.report.plots import wrong_rows

    rows = wrong_rows({"base": [5, 0, 2], "lora": [1, 4, 2]})
    assert rows == [{"digit": 0, "base": 5, "lora": 1}, {"digit": 1, "base": 0, "lora": 4},
                    {"digit": 2, "base": 2, "lora": 2}]
