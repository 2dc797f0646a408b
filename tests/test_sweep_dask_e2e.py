"""End to end: a sweep on Dask, a scheduler and three workers, each in its own clone, sharing a WebDAV DVC remote and a
bare git origin (tests/cluster.py); all real processes on 127.0.0.1. The experiment that trains both fine-tunings
(seed 1, rank 2) runs while its worker is killed; it must equal the local sweep's run of it (conftest.swept), and a
later one must restore what it shares with it from the remote."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster
from e2e import BIN, GRID, Repo, copy_of, experiment_locks


@pytest.fixture(scope="module")
def cluster(built: tuple[Repo, subprocess.CompletedProcess], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    up = None
    try:
        up = Cluster(copy_of(built, base / "project"), base, workers=3)  # one killed, one takes over, one restores
        yield up
    finally:
        if up is not None:
            up.procs.stop_all()


# Fine-tuning seed 1, rank 2: the experiment of the local sweep (e2e.GRID) that trains LoRA and full fine-tuning.
ONE = ("--pretrain-seeds", "0", "--finetune-seeds", "1", "--ranks", "2", "--replays", "0.0", "--no-anchors")


@pytest.fixture(scope="module")
def killed_sweep(cluster: Cluster) -> tuple[int, str, str]:
    """ONE run by the Dask driver while the worker that took it is killed in `dvc exp run`, with the dvc it runs
    and whatever stage that runs; the driver's exit status, its output and the killed worker's name."""
    driver, log = cluster.start_sweep(*ONE)
    try:
        deadline = time.monotonic() + 240
        while (victim := cluster.worker_running(b"\0exp\0run\0")) is None:
            assert driver.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no worker ran `dvc exp run`"
            time.sleep(0.1)
        cluster.procs.kill(victim)  # mid-experiment
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    return driver.returncode, log.read_text(), victim


def test_a_dask_sweep_survives_a_killed_worker_equals_the_local_one_and_restores_from_the_remote(
        killed_sweep: tuple[int, str, str], cluster: Cluster, swept: Repo) -> None:
    returncode, out, victim = killed_sweep
    assert returncode == 0, out
    assert "1 of 1 experiments to run on 3 workers" in out and "failed" not in out, out
    runner = re.search(r"sweep-p0-f1-r2-x0: .* \(.*/(w\d)\)$", out, re.MULTILINE)
    assert runner and runner[1] != victim, out  # another worker finished it
    runs, local = ((r.path / "experiments/sweep_runs.csv").read_text().splitlines() for r in (cluster.repo, swept))
    assert len(runs) == 1 + 3 and set(runs) <= set(local), runs  # header, base, LoRA, full: rows of the local table
    refs = cluster.repo.run("git", "ls-remote", "origin", "refs/exps/*").stdout.split()
    assert sum(r.startswith("refs/exps/") for r in refs) == 1  # the killed try left no ref

    # Rank 4 added, on the one worker that has run nothing: the finished experiment is not submitted again, and the
    # new one restores full fine-tuning (which the rank does not change) from the run the other worker pushed.
    cluster.procs.kill(runner[1])
    (fresh,) = set(cluster.clones) - {victim, runner[1]}
    again_grid = ("--pretrain-seeds", "0", "--finetune-seeds", "1", "--ranks", "2,4", "--replays", "0.0")
    rc, again = cluster.sweep(*again_grid, "--no-anchors")
    assert rc == 0 and "1 of 2 experiments to run" in again and "failed" not in again, again
    ran = re.search(rf"sweep-p0-f1-r4-x0: .* ran (\S+) \(.*/{fresh}\)$", again, re.MULTILINE)
    assert ran and ran[1] == "finetune,verify", again  # not finetune_full: restored


def test_a_queued_experiment_is_bit_identical_to_the_same_run_in_a_workspace(
        killed_sweep: tuple[int, str, str], cluster: Cluster, swept: Repo) -> None:
    """The local queue ran the experiment in a temporary copy of the repo, one worker per core on one thread; a Dask
    worker runs it in its clone's workspace with torch's default threads (numerics: portable; test_determinism
    covers fast mode's). The same params and dependencies give the same dvc.lock: every output's hash, the
    adapter's and full fine-tuning's among them, both trained in each sweep."""
    queued, distributed = experiment_locks(swept), experiment_locks(cluster.repo)
    assert queued[0, 2] != queued[1, 2]  # the seed changes the outputs: the comparison can fail
    assert distributed[1, 2] == queued[1, 2]


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
