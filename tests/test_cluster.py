"""The distributed sweep's pieces that need no cluster: names, the task graph, the task's refusal outside a clone
(the whole flow on real processes: test_sweep_e2e.py)."""

from __future__ import annotations

import subprocess

import pytest

from lora_mnist.sweep.cluster import SweepError, experiment_name, run_experiment, settings, submit
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


def test_each_pretraining_seed_is_trained_by_one_task_that_the_others_of_its_seed_wait_for():
    grid = Grid(pretrain_seeds=(0, 1), finetune_seeds=(0, 1), ranks=(4, 1), replays=(0.0,))
    todo = settings(grid)
    client = RecordingClient()
    futures = submit(client, "c0ffee" * 7, todo)
    assert len(futures) == len(client.calls) == 8
    anchors = {"0": "<future sweep-p0-f0-r1-x0-c0ffeec0ffee>", "1": "<future sweep-p1-f0-r1-x0-c0ffeec0ffee>"}
    for fn, args, key in client.calls:
        assert fn is run_experiment and key == f"{args[1]}-c0ffeec0ffee"
        commit, name, setting, *after = args
        seed = setting["pretrain.seed"]
        assert after == ([] if futures[client.calls.index((fn, args, key))] == anchors[seed] else [anchors[seed]])
    # A restarted driver: seed 0's anchor is done, so its first remaining setting trains (restores) the model.
    client = RecordingClient()
    submit(client, "c0ffee" * 7, todo[1:])
    assert client.calls[0][1][3:] == () and client.calls[1][1][3:] == ("<future sweep-p0-f0-r4-x0-c0ffeec0ffee>",)
    client = RecordingClient()
    submit(client, "c0ffee" * 7, todo, anchors=False)
    assert all(args[3:] == () for _, args, _ in client.calls)  # --no-anchors: all at once


def test_a_task_outside_a_clone_of_the_project_refuses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweepError, match="is not a clone of the project: start `dask worker` from inside the clone"):
        run_experiment("0" * 40, "sweep-p0-f0-r1-x0", settings(FULL)[0])


def test_a_sweep_left_without_workers_gives_up_with_one_clear_error():
    from distributed import Client, LocalCluster

    from lora_mnist.sweep.cluster import _as_completed_while_workers

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        futures = [client.submit(sum, [1, 2], pure=False)]  # no worker will ever take it
        with pytest.raises(SweepError, match=r"no worker for 1 s and 1 experiments left: start workers"):
            list(_as_completed_while_workers(client, futures, "tcp://test", grace_s=1, poll_s=0.2))
