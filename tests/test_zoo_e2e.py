"""End to end, the adapter zoo: one stage, PEFT-format adapters PEFT itself loads, its own knobs, verify."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from e2e import Repo, copy_of


def test_the_zoo_writes_a_peft_adapter_per_digit_and_the_pair(built: tuple[Repo, subprocess.CompletedProcess]) -> None:
    repo = built[0]
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
        assert repo.json(f"models/zoo/{digit}/training.json")["digits"] == [int(digit)]
    assert repo.json("models/zoo/pair/training.json")["digits"] == [0, 1]
    assert zoo["full_model_bytes"] == (repo.path / "models/pretrained.safetensors").stat().st_size
    models = zoo["composition"]["models"]
    assert sorted(models) == ["adapter_0", "adapter_1", "base", "pair", "sum"]
    assert models["adapter_0"]["wrong"]["0"] == zoo["adapters"]["0"]["wrong_lora"]
    headline = repo.json("metrics/summary/zoo.json")
    assert headline["zoo_adapters"] == 2
    assert headline["zoo_wrong"] == sum(entry["wrong_lora"] for entry in zoo["adapters"].values())


def test_zoo_knobs_rerun_the_zoo_only_and_adding_a_digit_keeps_the_others(
        built: tuple[Repo, subprocess.CompletedProcess], tmp_path: Path) -> None:
    repo = copy_of(built, tmp_path / "project")
    before = repo.snapshot("models/zoo/0", "models/zoo/1", "models/zoo/pair")
    lora = repo.snapshot("models/lora")
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    params["zoo"]["digits"] = [0, 1, 2]
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = repo.dvc("repro")
    assert repo.ran(proc) == {"zoo", "verify"}  # the LoRA experiment and the baselines are untouched
    # One process trains every adapter (faster than a stage per digit, bench/README.md); each is deterministic, so
    # the adapters already there come out bit for bit the same.
    assert repo.snapshot("models/zoo/0", "models/zoo/1", "models/zoo/pair") == before
    assert sorted(repo.json("metrics/zoo.json")["adapters"]) == ["0", "1", "2"]
    assert repo.json("metrics/summary/verify.json")["verified"] is True
    assert repo.snapshot("models/lora") == lora
    # Any other zoo knob: what `dvc repro` would run first is the zoo alone (verify follows when its adapters change);
    # that the zoo trains with its knobs is test_zoo.py's.
    params["zoo"]["rank"] = 2
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(repo.dvc("status", "--json").stdout)
    assert status == {"zoo": [{"changed deps": {"params.yaml": {"zoo": "modified"}}}]}, status


def test_peft_loads_each_zoo_adapter_and_predicts_as_ours(built: tuple[Repo, subprocess.CompletedProcess]) -> None:
    peft = pytest.importorskip("peft")
    import torch

    from lora_mnist.base.data import load_split
    from lora_mnist.base.model import load_model
    from lora_mnist.lora.adapter import load_adapter

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
