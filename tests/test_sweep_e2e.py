"""End to end: `experiments/sweep.py` on the synthetic pipeline, two fine-tuning seeds on the committed base model, two
workers: through DVC's queue on this machine, and on Dask workers in their own clones sharing real remotes
(tests/cluster.py). Each experiment re-trains what fine-tuning seeds change (finetune, finetune_full) and restores the
rest from the run cache; pretraining per seed is covered where it is cheaper (test_pipeline_e2e, test_cluster)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cluster import Cluster
from e2e import BIN, Repo, copy_of


GRID = ("--pretrain-seeds", "0", "--finetune-seeds", "1,2", "--ranks", "2", "--replays", "0.0", "--no-anchors")


@pytest.fixture(scope="module")
def swept(built: tuple[Repo, subprocess.CompletedProcess], tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """A copy of the built project after a 1 x 2-seed sweep through DVC's queue on two workers."""
    repo = copy_of(built, tmp_path_factory.mktemp("sweep") / "project")
    repo.run(str(BIN / "python"), "experiments/sweep.py", *GRID, "--jobs", "2")
    return repo


def test_sweep_writes_one_row_per_setting_over_the_seeds(swept: Repo) -> None:
    table = pd.read_csv(swept.path / "experiments/sweep.csv")
    assert list(table["method"]) == ["base", "lora", "full"] and list(table["n"]) == [1, 2, 2]
    lora = table[table["method"] == "lora"].iloc[0]
    assert lora["rank"] == 2 and 0 <= lora["accuracy_mean"] <= 1 and lora["accuracy_ci95"] >= 0
    runs = pd.read_csv(swept.path / "experiments/sweep_runs.csv")
    assert len(runs) == 1 + 4  # 1 pretrained model; 2 seed pairs x (LoRA, full fine-tuning)
    assert (swept.path / "experiments/sweep.png").stat().st_size > 0


def test_a_queued_experiment_is_bit_identical_to_the_same_run_in_the_workspace(swept: Repo) -> None:
    """The queue ran in temporary copies of the repo, one worker per core (one thread each); the workspace re-trains
    the same setting with torch's default threads (numerics: portable; test_determinism covers fast mode's)."""
    import dvc.api

    queued = [e for e in dvc.api.exp_show(repo=str(swept.path))
              if e.get("finetune.seed") == 2 and e.get("rank") != "workspace" and e.get("lora.rank") == 2]
    assert queued and queued[0]["cpu_products"] == "numpy OpenBLAS", queued
    params = yaml.safe_load((swept.path / "params.yaml").read_text())
    params["finetune"]["seed"], params["lora"]["rank"] = 2, 2
    (swept.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    swept.dvc("repro", "--force", "--single-item", "finetune")
    lock = yaml.safe_load((swept.path / "dvc.lock").read_text())["stages"]
    outs = {o["path"]: o["md5"] for o in lock["finetune"]["outs"]}
    assert outs["models/lora"] == queued[0]["models/lora"], [(e["rev"], e.get("models/lora")) for e in queued]
    headline = swept.json("metrics/summary/evaluate.json")  # and its scores
    assert {k: queued[0][k] for k in headline} == headline


# The same grid on Dask: a scheduler and two workers, each in its own clone, sharing a WebDAV DVC remote and a bare
# git origin (tests/cluster.py); all real processes on 127.0.0.1.


@pytest.fixture(scope="module")
def cluster(built: tuple[Repo, subprocess.CompletedProcess], tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("cluster")
    up = None
    try:
        up = Cluster(copy_of(built, base / "project"), base, workers=3)  # one to kill, one to take over
        yield up
    finally:
        if up is not None:
            up.procs.stop_all()


def test_a_dask_sweep_survives_a_killed_worker_equals_the_local_one_and_reruns_nothing(
        swept: Repo, cluster: Cluster) -> None:
    driver, log = cluster.start_sweep(*GRID)
    try:
        deadline = time.monotonic() + 240
        while (victim := cluster.worker_running_a_stage()) is None:  # two of three workers take an experiment each
            assert driver.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no worker ran a stage"
            time.sleep(0.05)
        cluster.procs.kill(victim)  # mid-pipeline: the worker and the dvc it runs
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    out = log.read_text()
    assert driver.returncode == 0, out
    assert "2 of 2 experiments to run on 3 workers" in out and "failed" not in out, out
    assert f"/{victim})" not in out  # its experiment was finished by another worker
    local, distributed = (r.path / "experiments/sweep.csv" for r in (swept, cluster.repo))
    assert distributed.read_bytes() == local.read_bytes()  # every row, bit for bit
    assert len(pd.read_csv(cluster.repo.path / "experiments/sweep_runs.csv")) == 1 + 4
    refs = cluster.repo.run("git", "ls-remote", "origin", "refs/exps/*").stdout.split()
    assert sum(r.startswith("refs/exps/") for r in refs) == 2  # one ref per experiment: the killed try left none

    # Again, fine-tuning seed 1 with rank 4 added: the finished experiment is not submitted again, and the new one
    # restores full fine-tuning (which the rank does not change) from the run cache: a worker's run, pushed.
    again_grid = ("--pretrain-seeds", "0", "--finetune-seeds", "1", "--ranks", "2,4", "--replays", "0.0")
    rc, again = cluster.sweep(*again_grid, "--no-anchors")
    assert rc == 0 and "1 of 2 experiments to run" in again and "failed" not in again, again
    assert re.search(r"sweep-p0-f1-r4-x0: .* ran finetune,verify \(", again), again  # not finetune_full


def test_an_unreachable_scheduler_origin_or_remote_is_named_before_any_work(
        built: tuple[Repo, subprocess.CompletedProcess], cluster: Cluster, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lora_mnist.sweep.cluster import SweepError, preflight

    repo = copy_of(built, tmp_path / "project")
    monkeypatch.setenv("PATH", repo.env["PATH"])  # preflight runs git and dvc as the driver does: from PATH
    heads = cluster.repo.run("git", "ls-remote", str(cluster.origin)).stdout
    proc = repo.run(str(BIN / "python"), "experiments/sweep.py", *GRID, "--connect-timeout", "2", "--scheduler",
                    "tcp://127.0.0.1:9", check=False)  # the driver's way of saying it: one line, exit status 1
    assert proc.returncode == 1 and proc.stderr.startswith("error: Dask scheduler tcp://127.0.0.1:9 unreachable")
    assert "experiments to run" not in proc.stdout
    with pytest.raises(SweepError, match="^git remote origin \\(none configured"):
        preflight(repo.path, cluster.address)
    repo.run("git", "remote", "add", "origin", str(tmp_path / "no-such-origin.git"))
    with pytest.raises(SweepError, match=f"^git remote origin \\({tmp_path / 'no-such-origin.git'}\\) unreachable"):
        preflight(repo.path, cluster.address)
    repo.run("git", "remote", "set-url", "origin", str(cluster.origin))
    with pytest.raises(SweepError, match="^no default DVC remote"):
        preflight(repo.path, cluster.address)
    repo.dvc("remote", "add", "-d", "shared", "webdav://127.0.0.1:9/cache")
    with pytest.raises(SweepError, match="^DVC remote 'shared' unreachable: .*Connection refused"):
        preflight(repo.path, cluster.address)
    assert cluster.repo.run("git", "ls-remote", str(cluster.origin)).stdout == heads  # nothing was pushed
