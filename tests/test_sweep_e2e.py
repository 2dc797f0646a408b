"""End to end: `experiments/sweep.py` through DVC's queue on the synthetic pipeline, 2 pretraining seeds, two workers."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest
import yaml
from e2e import BIN, Repo, copy_of

pytestmark = pytest.mark.xdist_group("sweep")  # one worker runs the sweep once for both tests


@pytest.fixture(scope="module")
def swept(built: tuple[Repo, subprocess.CompletedProcess], tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """A copy of the built project after a 2 x 1-seed sweep on two workers (no anchor pass: pretraining is cheap)."""
    repo = copy_of(built, tmp_path_factory.mktemp("sweep") / "project")
    repo.run(str(BIN / "python"), "experiments/sweep.py", "--pretrain-seeds", "0,1", "--finetune-seeds", "1",
             "--ranks", "2", "--replays", "0.0", "--jobs", "2", "--no-anchors")
    return repo


def test_sweep_writes_one_row_per_setting_over_the_seeds(swept: Repo) -> None:
    table = pd.read_csv(swept.path / "experiments/sweep.csv")
    assert list(table["method"]) == ["base", "lora", "full"] and list(table["n"]) == [2, 2, 2]
    lora = table[table["method"] == "lora"].iloc[0]
    assert lora["rank"] == 2 and 0 <= lora["accuracy_mean"] <= 1 and lora["accuracy_ci95"] >= 0
    runs = pd.read_csv(swept.path / "experiments/sweep_runs.csv")
    assert len(runs) == 2 + 4  # 2 pretrained models; 2 seed pairs x (LoRA, full fine-tuning)
    assert (swept.path / "experiments/sweep.png").stat().st_size > 0


def test_a_queued_experiment_is_bit_identical_to_the_same_run_in_the_workspace(swept: Repo) -> None:
    """The queue ran in temporary copies of the repo, one thread per worker; the workspace re-trains the same setting.

    Same thread count on purpose: at these tiny sizes MKL, which ignores MKL_CBWR on non-Intel CPUs, splits one
    GEMM's inner sum by thread count (test_determinism covers thread counts at the real model's sizes).
    """
    import dvc.api

    queued = [e for e in dvc.api.exp_show(repo=str(swept.path))
              if e.get("pretrain.seed") == 1 and e.get("finetune.seed") == 1 and e.get("rank") != "workspace"
              and e.get("lora.rank") == 2]
    assert queued and queued[0]["torch_threads"] == 1, queued
    params = yaml.safe_load((swept.path / "params.yaml").read_text())
    params["pretrain"]["seed"], params["finetune"]["seed"], params["lora"]["rank"] = 1, 1, 2
    (swept.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    swept.dvc("repro", "--force", "--single-item", "pretrain", "select_target", "finetune", env={"OMP_NUM_THREADS": "1"})
    lock = yaml.safe_load((swept.path / "dvc.lock").read_text())["stages"]
    outs = {o["path"]: o["md5"] for stage in ("pretrain", "finetune") for o in lock[stage]["outs"]}
    for path in ("models/pretrained.safetensors", "models/lora"):  # what the queued experiment's stages read
        assert outs[path] == queued[0][path], (path, [(e["rev"], e.get(path), e.get("torch_threads")) for e in queued])
