"""The distributed sweep's pieces that need no cluster: names, the task graph, the task's refusal outside a clone
(the whole flow on real processes: test_sweep_dask_e2e.py)."""

from __future__ import annotations

import subprocess

import pytest

from lora_mnist.sweep.cluster import SweepError, experiment_name, plan, run_experiment, settings, submit
from lora_mnist.sweep.grid import FULL, Grid


class RecordingClient:
    """What Dask's Client.submit was asked to run: the function, its arguments, the task's key."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def submit(self, fn, *args, key: str, pure: bool):
        assert pure is False  # an experiment has side effects (pushes): never deduplicated by argument hash
        self.calls.append((fn, args, key))
        return f"<future {key}>"


def test_every_setting_has_its_own_stable_valid_name():
    names = [experiment_name(s) for s in settings(FULL)]
    assert len(names) == len(set(names)) == 3 * 5 * 3 * 2
    assert names[0] == "sweep-p0-f0-r1-x0" and experiment_name(settings(FULL)[1]) == "sweep-p0-f0-r1-x0_1"
    for name in names[:4]:  # a git ref name, as `dvc exp push` stores it
        assert subprocess.run(["git", "check-ref-format", f"refs/exps/ab/cd/{name}"]).returncode == 0
    assert settings(FULL)[-1]["lora.targets"] == "[linear1,linear2]"  # rank 16 > linear3's 10 outputs


def test_each_pretraining_seed_is_trained_by_one_task_before_the_others_of_its_seed_are_submitted():
    grid = Grid(pretrain_seeds=(0, 1), finetune_seeds=(0, 1), ranks=(4, 1), replays=(0.0,))
    todo = settings(grid)
    now, later = plan(todo)
    assert [experiment_name(s) for s in now] == ["sweep-p0-f0-r1-x0", "sweep-p1-f0-r1-x0"]  # smallest rank first
    assert {seed: len(rest) for seed, rest in later.items()} == {"0": 3, "1": 3}
    assert sorted(map(experiment_name, now + later["0"] + later["1"])) == sorted(map(experiment_name, todo))
    # A restarted driver: seed 0's first setting is done, so its first remaining one trains (restores) the model.
    now, later = plan(todo[1:])
    assert experiment_name(now[0]) == "sweep-p0-f0-r4-x0" and len(later["0"]) == 2
    assert plan(todo, anchors=False) == (todo, {})  # --no-anchors: all at once

    client = RecordingClient()
    futures = submit(client, "c0ffee" * 7, now)
    for (fn, args, key), setting in zip(client.calls, now, strict=True):
        assert fn is run_experiment and args == ("c0ffee" * 7, experiment_name(setting), setting)  # no data between
        assert key == f"{experiment_name(setting)}-c0ffeec0ffee" and futures[f"<future {key}>"] == setting


def test_a_task_outside_a_clone_of_the_project_refuses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweepError, match="is not a clone of the project: start `dask worker` from inside the clone"):
        run_experiment("0" * 40, "sweep-p0-f0-r1-x0", settings(FULL)[0])


def test_a_sweep_left_without_workers_gives_up_with_one_clear_error():
    from distributed import Client, LocalCluster

    from lora_mnist.sweep.cluster import _as_completed_while_workers

    # dashboard_address=None still serves one, on 8787 if free: ":0" takes any free port, wherever the suite runs
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
        pending = {client.submit(sum, [1, 2], pure=False)}  # no worker will ever take it
        with pytest.raises(SweepError, match=r"no worker for 1 s and 1 experiments left: start workers"):
            list(_as_completed_while_workers(client, pending, "tcp://test", grace_s=1, poll_s=0.2))
