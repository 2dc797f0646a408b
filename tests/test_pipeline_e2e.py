"""End to end: the real `dvc` CLI on a temporary git repo with the project's pipeline and synthetic MNIST.

The tests in this module share one repo and run in file order: each builds on the state the previous left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from synthetic import write_expected, write_mnist

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore", "stages", "src"]
STAGES = {"download", "pretrain", "snapshot", "select_target", "filter", "finetune", "verify", "evaluate",
          "finetune_full", "analyze"}


class Repo:
    """A scratch copy of the project, with helpers to run commands in it."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path, self.env = path, env

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, check=check)

    def ran(self, proc: subprocess.CompletedProcess) -> set[str]:
        """Names of the stages a `dvc repro` / `dvc exp run` actually ran."""
        return set(re.findall(r"Running stage '([^']+)'", proc.stdout))

    def json(self, rel: str) -> dict:
        return json.loads((self.path / rel).read_text())

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "--allow-empty", "-m", message)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    base = tmp_path_factory.mktemp("e2e")
    path = base / "project"
    for rel in PROJECT:
        src, dst = ROOT / rel, path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst)
    expected = write_mnist(base / "mnist", n_train=400, n_test=200)
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["data"]["source"] = str(base / "mnist")
    params["model"] = {"hidden_size_1": 32, "hidden_size_2": 16}
    params["pretrain"].update(batch_size=20, epochs=2)
    params["finetune"].update(steps=8, batch_size=5)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "LORA_MNIST_EXPECTED_MD5": str(write_expected(base / "expected.json", expected)),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
        "DVC_NO_ANALYTICS": "1",
    }
    r = Repo(path, env)
    r.run("git", "init", "-q", "-b", "main")
    r.commit("project")
    return r


def test_full_repro_runs_every_stage_and_writes_the_outputs(repo: Repo) -> None:
    proc = repo.dvc("repro")
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
    assert repo.json("metrics/filter.json") == {"digit": ev["target"]["digit"], "size": 40, "others": 360}
    forgetting = ev["forgetting"]
    assert set(forgetting["target_accuracy"]) == {"base", "lora"} and 0 <= forgetting["lora"]["most_hurt_digit"] <= 9
    full = repo.json("metrics/finetune_full.json")
    assert full["trainable_params"] == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert full["accuracy"]["base"] == ev["accuracy"]["base"] and 0 <= full["accuracy"]["full"] <= 1
    analyze = repo.json("metrics/analyze.json")
    assert analyze["size"]["lora"]["trainable_params"] == 890
    assert analyze["size"]["full"]["bytes"] == (repo.path / "models/full.safetensors").stat().st_size
    for layer in ("linear1", "linear2", "linear3"):
        assert analyze["layers"][layer]["lora"]["rank_99"] == 1  # a rank-1 update is rank 1
        assert analyze["layers"][layer]["full"]["rank_99"] >= 1
    for rel in ("models/adapter/adapter_config.json", "models/adapter/adapter_model.safetensors",
                "plots/pretrain/plots/metrics/loss.tsv", "plots/finetune/plots/metrics/loss.tsv",
                "plots/confusion/confusion_base.json", "plots/confusion/confusion_lora.json",
                "plots/evaluate/wrong_per_digit.png", "plots/analyze/spectrum.png", "models/merged.safetensors"):
        assert (repo.path / rel).is_file(), rel
    assert len((repo.path / "plots/pretrain/plots/metrics/loss.tsv").read_text().splitlines()) == 1 + 40
    assert not list(repo.path.rglob(".tmp-*")), "an atomic write left a temp file behind"
    repo.commit("results")


def test_merged_export_needs_no_lora_code_and_predicts_like_the_lora_model(repo: Repo) -> None:
    import torch
    from safetensors.torch import load_file as load_torch

    from lora_mnist.adapter import load_adapter
    from lora_mnist.checkpoint import load_model
    from lora_mnist.model import RichBoyNet

    merged = RichBoyNet(32, 16)
    merged.load_state_dict(load_torch(repo.path / "models/merged.safetensors"))  # plain state_dict, strict
    lora = load_model(repo.path / "models/pretrained.safetensors")
    load_adapter(lora, repo.path / "models/adapter")
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
    for rel in ("models/pretrained.safetensors", "models/adapter/adapter_model.safetensors",
                "data/raw/MNIST/raw/t10k-labels-idx1-ubyte"):
        assert (clone.path / rel).read_bytes() == (repo.path / rel).read_bytes()


def test_forced_rerun_is_bit_identical(repo: Repo) -> None:
    repo.dvc("repro", "--force", "--single-item", "pretrain", "finetune", "evaluate", "finetune_full", "analyze")
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
    rerun = repo.dvc("repro", "--no-run-cache")
    assert repo.ran(rerun) == {"pretrain"}  # same bytes as before, so nothing downstream changed
    assert json.loads(repo.dvc("status", "--json").stdout) == {}
    assert repo.run("git", "status", "--porcelain").stdout == ""
    assert not list(repo.path.rglob(".tmp-*"))


def test_rank_change_reruns_exactly_finetune_verify_evaluate(repo: Repo) -> None:
    proc = repo.dvc("exp", "run", "-S", "lora.rank=2")
    assert repo.ran(proc) == {"finetune", "verify", "evaluate", "analyze"}  # analyze reads the adapter
    assert repo.json("metrics/evaluate.json")["param_count"]["lora"] == 2 * 890
    diff = json.loads(repo.dvc("metrics", "diff", "--all", "--json").stdout)
    evaluate = diff["metrics/evaluate.json"]
    assert {"accuracy.base", "accuracy.lora", "param_count.lora"} <= set(evaluate)
    assert evaluate["param_count.lora"]["old"] == 890 and evaluate["param_count.lora"]["new"] == 1780
    shown = repo.dvc("exp", "show", "--csv").stdout
    assert "lora.rank" in shown and "accuracy.lora" in shown


def test_each_param_invalidates_exactly_the_stages_that_read_it(repo: Repo) -> None:
    """`dvc repro --dry` plans without running: it lists the stages a param change invalidates directly
    (what runs after them depends on whether their outputs change, as the rank test shows)."""
    repo.run("git", "checkout", "--", ".")
    repo.dvc("checkout", "--quiet")
    current = yaml.safe_load((repo.path / "params.yaml").read_text())
    cases = [
        ("target", "digit", (repo.json("metrics/select_target.json")["target"]["digit"] + 1) % 10, {"select_target"}),
        ("finetune", "replay", 0.2, {"finetune", "finetune_full"}),
        ("lora", "alpha", 2, {"finetune"}),
        ("model", "hidden_size_2", 12, {"pretrain"}),
        ("pretrain", "lr", 0.002, {"pretrain"}),
    ]
    for section, key, value, expected in cases:
        params = yaml.safe_load((repo.path / "params.yaml").read_text())
        params[section][key] = value
        (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert repo.ran(repo.dvc("repro", "--dry")) == expected, (section, key)  # --dry: plan only
        (repo.path / "params.yaml").write_text(yaml.safe_dump(current, sort_keys=False))
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    params["device"] = "auto"  # resolves to this machine's device: only the compute stages care
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert repo.ran(repo.dvc("repro", "--dry")) == {"pretrain", "finetune", "evaluate", "finetune_full"}
    repo.run("git", "checkout", "--", "params.yaml")


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
    "models/finetuned.safetensors": ("linear3.parametrizations.weight.original", [
        "models/finetuned.safetensors: tensor linear3.weight differs from the snapshot (max abs diff 0.5)",
    ]),
    "models/adapter/adapter_model.safetensors": ("base_model.model.linear1.lora_A.weight", [
        "models/adapter/adapter_model.safetensors: tensor base_model.model.linear1.lora_A.weight differs from the "
        "fine-tuned model's (max abs diff 0.5)",
    ]),
}


@pytest.mark.parametrize("rel", sorted(TAMPER))
def test_tampered_artifact_fails_verify_naming_the_tensor(repo: Repo, rel: str) -> None:
    repo.run("git", "checkout", "--", ".")
    repo.dvc("checkout", "--quiet", "--force")
    key, messages = TAMPER[rel]
    tamper(repo.path / rel, key, 0.5)
    proc = repo.dvc("repro", "--single-item", "verify", check=False)
    assert proc.returncode != 0
    for message in messages:
        assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert repo.json("metrics/verify.json")["passed"] is False
