"""End to end: the real `dvc` CLI on a temporary git repo with the project's pipeline and synthetic MNIST.

One `dvc repro` builds the pipeline (`built`, once per session, conftest.py); every other test gets its own copy of that
committed state (`repo`), so the tests are independent of each other and of their order.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from e2e import BIN, Repo, copy_of
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

ZOO_STAGES = {"zoo@0", "zoo@1", "zoo_pair", "zoo_eval"}  # SMALL's zoo.digits: [0, 1]
STAGES = {"download", "pretrain", "snapshot", "select_target", "filter", "finetune", "verify", "evaluate",
          "finetune_full", "analyze_full", "analyze", "numerics"} | ZOO_STAGES
LORA_STAGES = {"finetune", "verify", "evaluate", "analyze"} | ZOO_STAGES  # what a change of lora.* re-runs


@pytest.fixture
def repo(built: tuple[Repo, subprocess.CompletedProcess], tmp_path: Path) -> Repo:
    """A private copy of the built project: each test starts from the same committed state."""
    return copy_of(built, tmp_path / "project")


def test_full_repro_runs_every_stage_and_writes_the_outputs(built: tuple[Repo, subprocess.CompletedProcess]) -> None:
    repo, proc = built
    assert repo.ran(proc) == STAGES
    assert "Traceback" not in proc.stderr
    ev = repo.json("metrics/evaluate.json")
    for key in ("base", "lora"):
        assert 0 <= ev["accuracy"][key] <= 1
        assert set(ev["wrong"][key]) == {str(d) for d in range(10)}
    assert ev["target"]["digit"] == repo.json("metrics/select_target.json")["target"]["digit"]
    assert ev["target"]["wrong_base"] == ev["wrong"]["base"][str(ev["target"]["digit"])]
    assert ev["checks"] == {"lora_off_logits_equal_pretrained": True}
    pre = repo.json("metrics/pretrain.json")["test"]  # select_target chose from these, without torch
    assert pre["wrong"] == ev["wrong"]["base"] and pre["accuracy"] == ev["accuracy"]["base"]
    # rank 1 on 784->32->16->10: (784+32) + (32+16) + (16+10)
    assert ev["param_count"]["lora"] == 890
    verify = repo.json("metrics/verify.json")
    assert verify["passed"] is True and verify["max_abs_diff"] == 0.0 and verify["tensors_checked"] >= 12
    assert all(verify["checks"].values()) and "adapter_equals_finetuned" in verify["checks"]
    assert repo.json("metrics/filter.json") == {"digit": ev["target"]["digit"], "size": 40, "others": 360, "pool": 400}
    forgetting = ev["forgetting"]
    assert set(forgetting["target_accuracy"]) == {"base", "lora"} and 0 <= forgetting["lora"]["most_hurt_digit"] <= 9
    full = repo.json("metrics/finetune_full.json")
    assert full["trainable_params"] == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert full["accuracy"]["base"] == ev["accuracy"]["base"] and 0 <= full["accuracy"]["full"] <= 1
    headline = {**repo.json("metrics/summary/evaluate.json"), **repo.json("metrics/summary/finetune_full.json"),
                **repo.json("metrics/summary/verify.json")}  # no key in two files: no path prefix in the table
    assert len(headline) == sum(len(repo.json(f"metrics/summary/{s}.json")) for s in ("evaluate", "finetune_full", "verify"))
    assert headline["acc_lora"] == ev["accuracy"]["lora"] and headline["target"] == ev["target"]["digit"]
    assert headline["wrong_lora"] == ev["target"]["wrong_lora"] and headline["lora_params"] == 890
    assert headline["verified"] is True and headline["acc_full"] == full["accuracy"]["full"]
    numerics = repo.json("metrics/numerics.json")
    assert numerics["torch"] == torch_version() and numerics["torch_device"] == "cpu"
    assert {"cpu", "cpu_vendor", "aten_capability", "mkl_cbwr", "torch_threads", "openblas_threads"} <= set(numerics)
    for stage in ("pretrain", "finetune", "evaluate", "finetune_full"):
        assert repo.json(f"metrics/numerics/{stage}.json")["torch_device"] == "cpu", stage
    for stage in ("analyze_full", "analyze"):  # numpy only
        assert repo.json(f"metrics/numerics/{stage}.json")["openblas_threads"] == 1, stage
    runs = repo.path / ".dvc/cache/runs"
    assert len([d for d in runs.glob("*/*") if d.is_dir()]) == len(STAGES)  # each stage is in the run cache
    analyze = repo.json("metrics/analyze.json")
    assert analyze["size"]["lora"]["trainable_params"] == 890
    assert analyze["size"]["full"]["bytes"] == (repo.path / "models/full.safetensors").stat().st_size
    for layer in ("linear1", "linear2", "linear3"):
        assert analyze["layers"][layer]["lora"]["rank_99"] == 1  # a rank-1 update is rank 1
        assert analyze["layers"][layer]["full"]["rank_99"] >= 1
    for rel in ("models/lora/adapter_config.json", "models/lora/adapter_model.safetensors",
                "plots/evaluate/wrong_per_digit.png", "plots/analyze/spectrum_full.png", "models/lora/merged.safetensors"):
        assert (repo.path / rel).is_file(), rel
    assert len((repo.path / "plots/pretrain/loss.tsv").read_text().splitlines()) == 1 + 40
    assert not list(repo.path.rglob(".tmp-*")), "an atomic write left a temp file behind"


def torch_version() -> str:
    import torch

    return torch.__version__


def test_plots_show_each_plot_once_with_its_file(repo: Repo) -> None:
    shown = json.loads(repo.dvc("plots", "show", "--json").stdout)["data"]
    declared = {path: opts for spec in yaml.safe_load((repo.path / "dvc.yaml").read_text())["stages"].values()
                for entry in spec.get("plots", []) for path, opts in entry.items()}
    assert sorted(shown) == sorted(declared)  # one plot per declared file: no duplicate ids
    for plot_id, renders in shown.items():
        assert (repo.path / plot_id).is_file()
        for render in renders:
            if render["type"] == "vega":
                assert render["content"]["title"]["text"] == declared[plot_id]["title"]
    spectrum = shown["plots/analyze/spectrum_full_linear2.json"][0]["content"]
    assert spectrum["encoding"]["y"]["scale"]["type"] == "log"


def test_merged_export_needs_no_lora_code_and_predicts_like_the_lora_model(repo: Repo) -> None:
    import torch
    from safetensors.torch import load_file as load_torch

    from lora_mnist.adapter import load_adapter
    from lora_mnist.checkpoint import load_model
    from lora_mnist.model import RichBoyNet

    merged = RichBoyNet(32, 16)
    merged.load_state_dict(load_torch(repo.path / "models/lora/merged.safetensors"))  # plain state_dict, strict
    lora = load_model(repo.path / "models/pretrained.safetensors")
    load_adapter(lora, repo.path / "models/lora")
    x = torch.randn(64, 784, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(merged(x), lora(x))  # the very same weight expression, so bit-identical


def test_second_repro_runs_nothing(repo: Repo) -> None:
    proc = repo.dvc("repro")
    assert repo.ran(proc) == set()
    assert json.loads(repo.dvc("status", "--json").stdout) == {}


def test_push_then_pull_into_a_fresh_clone_needs_no_recompute(repo: Repo) -> None:
    remote = repo.path.parent / "dvc-remote"
    repo.dvc("remote", "add", "--default", "shared", str(remote))
    repo.dvc("push")
    repo.commit("add a shared DVC remote")
    clone = Repo(repo.path.parent / "clone", repo.env)
    repo.run("git", "clone", "-q", str(repo.path), str(clone.path))
    clone.dvc("pull")
    assert json.loads(clone.dvc("status", "--json").stdout) == {}  # up to date: nothing to recompute
    assert repo.ran(clone.dvc("repro")) == set()
    for rel in ("models/pretrained.safetensors", "models/lora/adapter_model.safetensors",
                "data/raw/MNIST/raw/t10k-labels-idx1-ubyte"):
        assert (clone.path / rel).read_bytes() == (repo.path / rel).read_bytes()


def test_forced_rerun_is_bit_identical(repo: Repo) -> None:
    # The torch stages: the numpy-only ones are pinned to one OpenBLAS thread and kernel set (cpu.pin_blas).
    repo.dvc("repro", "--force", "--single-item", "pretrain", "finetune", "evaluate", "finetune_full")
    assert json.loads(repo.dvc("status", "--json").stdout) == {}
    assert repo.run("git", "status", "--porcelain").stdout == ""  # dvc.lock, metrics and plots unchanged


def test_killed_stage_leaves_nothing_half_written_and_rerun_is_bit_identical(repo: Repo) -> None:
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    params["pretrain"]["epochs"] = 5000  # long enough to be killed mid-training
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.Popen([str(BIN / "dvc"), "repro", "--single-item", "pretrain"], cwd=repo.path, env=repo.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = ""
    while not re.search(r"pretrain:\s+\d+%.*\| *[1-9]\d*/", seen):  # training has made progress
        chunk = proc.stderr.read(64)
        assert chunk, f"stage ended before it could be killed:\n{seen}"
        seen += chunk
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    model = repo.path / "models/pretrained.safetensors"
    assert not model.exists()  # dvc removed the old output; the killed run wrote none
    assert not (repo.path / "metrics/pretrain.json").exists()
    repo.run("git", "checkout", "--", "params.yaml")
    # --force: DVC would otherwise check the lost outputs out of its cache (dvc.lock still names them).
    rerun = repo.dvc("repro", "--force", "--single-item", "pretrain")
    assert repo.ran(rerun) == {"pretrain"}
    assert json.loads(repo.dvc("status", "--json").stdout) == {}
    assert repo.run("git", "status", "--porcelain").stdout == ""
    assert not list(repo.path.rglob(".tmp-*"))


PRETRAIN_OUTS = ("models/pretrained.safetensors", "metrics/pretrain.json", "metrics/numerics/pretrain.json",
                 "plots/pretrain/loss.tsv")


def test_refused_param_then_fixed_restores_from_the_run_cache(repo: Repo) -> None:
    before = repo.snapshot(*PRETRAIN_OUTS)
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    params["pretrain"]["epochs"] = 0
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = repo.dvc("repro", check=False)
    assert proc.returncode != 0
    assert "error: params: pretrain.epochs = 0 is invalid: expected an integer >= 1" in proc.stderr
    assert not (repo.path / "models/pretrained.safetensors").exists()  # DVC removed the outputs before running
    repo.run("git", "checkout", "--", "params.yaml")
    fixed = repo.dvc("repro")
    assert repo.restored(fixed) == {"pretrain"} and repo.ran(fixed) == set()  # no stage command executed
    assert repo.snapshot(*PRETRAIN_OUTS) == before
    assert repo.run("git", "status", "--porcelain").stdout == ""


LORA_OUTS = ("models/lora", "models/zoo", "metrics/evaluate.json", "metrics/summary", "metrics/analyze.json", "metrics/zoo.json",
             "plots/evaluate", "plots/zoo")


def test_rank_change_reruns_the_lora_stages_and_a_round_trip_restores_them(repo: Repo) -> None:
    before = repo.snapshot(*LORA_OUTS)
    proc = repo.dvc("exp", "run", "-S", "lora.rank=2")
    assert repo.ran(proc) == LORA_STAGES  # analyze_full, the full fine-tuning spectra, is not among them
    assert repo.json("metrics/evaluate.json")["param_count"]["lora"] == 2 * 890
    diff = json.loads(repo.dvc("metrics", "diff", "--json").stdout)["metrics/summary/evaluate.json"]
    assert diff["lora_params"] == {"old": 890, "new": 1780, "diff": 890}
    everything = json.loads(repo.dvc("metrics", "diff", "--all", "--json").stdout)["metrics/summary/evaluate.json"]
    assert "acc_lora" in everything
    table = repo.run("env", "COLUMNS=160", str(BIN / "dvc"), "exp", "show", "--only-changed", "--no-pager").stdout
    assert "lora.rank" in table and "lora_params" in table and "models/lora" in table, table
    # Only a trailing hash column (models/zoo) may be cut at 160 columns, never a metric or param.
    assert all(line.rstrip().endswith("…") for line in table.splitlines() if "…" in line), table

    back = repo.dvc("exp", "run", "-S", "lora.rank=1")
    assert repo.ran(back) == set() and repo.restored(back) == LORA_STAGES
    assert repo.snapshot(*LORA_OUTS) == before


def test_choosing_the_target_on_held_out_images_reruns_from_pretraining(repo: Repo) -> None:
    proc = repo.dvc("exp", "run", "-S", "target.select_on=validation", "evaluate")  # evaluate and what it reads
    assert repo.ran(proc) == {"pretrain", "select_target", "filter", "finetune", "evaluate"}  # pretraining sees only
    # the first five sixths (the zoo's digit sets in validation mode: tests/test_zoo.py)
    pretrain = repo.json("metrics/pretrain.json")
    assert pretrain["train_size"] == 400 - 66 and pretrain["validation_size"] == 66
    assert sum(pretrain["validation"]["wrong"].values()) <= 66 and "test" in pretrain
    selection = repo.json("metrics/select_target.json")
    assert selection["target"]["chosen_on"] == "validation"
    assert selection["chosen_on_wrong"] == pretrain["validation"]["wrong"]
    assert selection["target"]["digit"] == repo.json("metrics/evaluate.json")["target"]["digit"]
    assert repo.json("metrics/evaluate.json")["target"]["chosen_on"] == "validation"
    assert repo.json("metrics/filter.json")["pool"] == 400 - 66


def test_bad_param_is_one_clear_error(repo: Repo) -> None:
    proc = repo.dvc("exp", "run", "-S", "lora.rank=0", check=False)
    assert proc.returncode != 0
    assert "error: params: lora.rank = 0 is invalid: expected an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def tamper(path: Path, key: str, delta: float) -> None:
    """Add `delta` to element 3 of tensor `key`, keeping the file valid safetensors."""
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    tensors[key] = tensors[key].copy()
    tensors[key].reshape(-1)[3] += np.float32(delta)
    path.unlink()  # DVC may have linked it from the cache: never write through to the cache
    save_file(tensors, path, metadata=metadata)


TAMPER = {
    "models/snapshot.safetensors": ("linear2.bias", [
        "tensor linear2.bias does not match its manifest sha256",
        "models/pretrained.safetensors: tensor linear2.bias differs from the snapshot (max abs diff 0.5)",
    ]),
    "models/pretrained.safetensors": ("linear1.weight", [
        "models/pretrained.safetensors: tensor linear1.weight differs from the snapshot (max abs diff 0.5)",
    ]),
    "models/lora/finetuned.safetensors": ("linear3.parametrizations.weight.original", [
        "models/lora/finetuned.safetensors: tensor linear3.weight differs from the snapshot (max abs diff 0.5)",
    ]),
    "models/lora/adapter_model.safetensors": ("base_model.model.linear1.lora_A.weight", [
        "models/lora/adapter_model.safetensors: tensor base_model.model.linear1.lora_A.weight differs from the "
        "fine-tuned model's (max abs diff 0.5)",
    ]),
}


@pytest.mark.parametrize("rel", sorted(TAMPER))
def test_tampered_artifact_fails_verify_naming_the_tensor(repo: Repo, rel: str) -> None:
    key, messages = TAMPER[rel]
    tamper(repo.path / rel, key, 0.5)
    proc = repo.dvc("repro", "--single-item", "verify", check=False)
    assert proc.returncode != 0
    for message in messages:
        assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert repo.json("metrics/verify.json")["passed"] is False
