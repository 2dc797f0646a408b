"""End to end: the local sweep's grid (conftest.GRID) on Dask, a scheduler and three workers, each in its own clone,
sharing a WebDAV DVC remote and a bare git origin (tests/cluster.py); all real processes on 127.0.0.1. One worker is
killed mid-experiment; the result must equal the local sweep's (conftest.swept), experiment by experiment."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from cluster import Cluster
from conftest import GRID
from e2e import BIN, Repo, copy_of, experiment_locks

@pytest.fixture(scope="module")
def cluster(built: tuple[Repo, subprocess.CompletedProcess], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    up = None
    try:
        up = Cluster(copy_of(built, base / "project"), base, workers=3)  # one to kill, one to take over
        yield up
    finally:
        if up is not None:
            up.procs.stop_all()


@pytest.fixture(scope="module")
def killed_sweep(cluster: Cluster) -> tuple[int, str, str]:
    """GRID run by the Dask driver while the first worker seen running a stage is killed (it and the dvc it runs);
    the driver's exit status, its output and the killed worker's name."""
    driver, log = cluster.start_sweep(*GRID)
    try:
        deadline = time.monotonic() + 240
        while (victim := cluster.worker_running_a_stage()) is None:  # two of three workers take an experiment each
            assert driver.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no worker ran a stage"
            time.sleep(0.05)
        cluster.procs.kill(victim)  # mid-pipeline
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    return driver.returncode, log.read_text(), victim


def test_a_dask_sweep_survives_a_killed_worker_equals_the_local_one_and_reruns_nothing(
        killed_sweep: tuple[int, str, str], cluster: Cluster, swept: Repo) -> None:
    returncode, out, victim = killed_sweep
    assert returncode == 0, out
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


def test_a_queued_experiment_is_bit_identical_to_the_same_run_in_a_workspace(
        killed_sweep: tuple[int, str, str], cluster: Cluster, swept: Repo) -> None:
    """The local queue ran each experiment in a temporary copy of the repo, one worker per core on one thread; a
    Dask worker runs it in its clone's workspace with torch's default threads (numerics: portable;
    test_determinism covers fast mode's). The same params and dependencies give the same dvc.lock: every output's
    hash, the adapter's and full fine-tuning's among them (seed 1 trains both in each sweep)."""
    queued, distributed = experiment_locks(swept), experiment_locks(cluster.repo)
    assert queued[0, 2] != queued[1, 2]  # the seed matters: a real comparison
    assert {k: distributed[k] for k in queued} == queued


def test_an_unreachable_scheduler_origin_or_remote_is_named_before_any_work(
        built: tuple[Repo, subprocess.CompletedProcess], cluster: Cluster, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lora_mnist.sweep.cluster import SweepError, preflight

    repo = copy_of(built, tmp_path / "project")
    monkeypatch.setenv("PATH", repo.env["PATH"])  # preflight runs git and dvc as the driver does: from PATH
    heads = cluster.repo.run("git", "ls-remote", str(cluster.origin)).stdout
    proc = repo.run(str(BIN / "python"), "experiments/sweep.py", *GRID, "--connect-timeout", "0.5", "--scheduler",
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
