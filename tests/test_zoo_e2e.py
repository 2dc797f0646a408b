"""End to end, the adapter zoo: one DVC stage entry per digit, PEFT-format adapters PEFT itself loads, verify."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from e2e import Repo, copy_of


def test_each_digit_has_its_own_stage_entry_and_peft_adapter(built: tuple[Repo, subprocess.CompletedProcess]) -> None:
    repo, proc = built
    assert {"zoo@0", "zoo@1", "zoo_pair", "zoo_eval"} <= repo.ran(proc)
    for name in ("0", "1", "pair"):
        assert sorted(p.name for p in (repo.path / "models/zoo" / name).iterdir()) == [
            "adapter_config.json", "adapter_model.safetensors", "training.json"], name
    zoo = repo.json("metrics/zoo.json")
    assert zoo["digits"] == [0, 1] and sorted(zoo["adapters"]) == ["0", "1"]
    for digit, entry in zoo["adapters"].items():
        assert entry["wrong_base"] == zoo["base"]["wrong"][digit]
        assert 0 <= entry["others_accuracy_lora"] <= 1 and entry["wrong_lora"] == entry["wrong"][digit]
        folder = repo.path / "models/zoo" / digit
        assert entry["bytes"] == sum((folder / f).stat().st_size for f in ("adapter_config.json", "adapter_model.safetensors"))
    assert zoo["full_model_bytes"] == (repo.path / "models/full.safetensors").stat().st_size
    models = zoo["composition"]["models"]
    assert sorted(models) == ["adapter_0", "adapter_1", "base", "pair", "sum"]
    assert models["adapter_0"]["wrong"]["0"] == zoo["adapters"]["0"]["wrong_lora"]
    headline = repo.json("metrics/summary/zoo.json")
    assert headline["zoo_adapters"] == 2
    assert headline["zoo_wrong"] == sum(entry["wrong_lora"] for entry in zoo["adapters"].values())
    checks = repo.json("metrics/verify.json")["checks"]
    assert checks["zoo_base_equals_snapshot"] and checks["zoo_adapters_equal_trained"] and checks["zoo_adapters_readable_and_consistent"]
    assert (repo.path / "plots/zoo/heatmap.png").stat().st_size > 0


def test_adding_a_digit_runs_only_its_entry(built: tuple[Repo, subprocess.CompletedProcess], tmp_path: Path) -> None:
    repo = copy_of(built, tmp_path / "project")
    before = repo.snapshot("models/zoo/0", "models/zoo/1", "models/zoo/pair")
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    params["zoo"]["digits"] = [0, 1, 2]
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = repo.dvc("repro")
    assert repo.ran(proc) == {"zoo@2", "zoo_eval", "verify"}
    assert repo.snapshot("models/zoo/0", "models/zoo/1", "models/zoo/pair") == before
    assert sorted(repo.json("metrics/zoo.json")["adapters"]) == ["0", "1", "2"]
    assert repo.json("metrics/summary/verify.json")["verified"] is True


def test_peft_loads_each_zoo_adapter_and_predicts_as_ours(built: tuple[Repo, subprocess.CompletedProcess]) -> None:
    peft = pytest.importorskip("peft")
    import torch

    from lora_mnist.adapter import load_adapter
    from lora_mnist.checkpoint import load_model
    from lora_mnist.data import load_split

    repo = built[0]
    images, _ = load_split(repo.path / "data/raw", "test")
    pretrained = repo.path / "models/pretrained.safetensors"
    for name in ("0", "1", "pair"):
        folder = repo.path / "models/zoo" / name
        ours = load_model(pretrained)
        load_adapter(ours, folder)
        theirs = peft.PeftModel.from_pretrained(load_model(pretrained), folder).eval()
        with torch.no_grad():
            a, b = ours(images), theirs(images)
        assert not torch.equal(a, load_model(pretrained)(images)), name  # the adapter does something
        assert torch.equal(a.argmax(1), b.argmax(1)), name
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
