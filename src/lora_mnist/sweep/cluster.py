"""Sweeps beyond one machine: each experiment a Dask task, run in a worker's own clone of the project, shared through
the project's git remote (`origin`) and its default DVC remote.

The driver (`experiments/sweep.py --scheduler ADDRESS`) checks that the scheduler, the git remote and the DVC remote
answer, pushes the commit and its cached inputs, and submits one task per experiment not yet on `origin`; each
pretraining seed's first experiment runs before the others that read its model. A task, in the worker's clone:
fetch the commit, `dvc pull --run-cache`, `dvc exp run -n NAME -S ...`, `dvc push --run-cache`, then
`dvc exp push --no-cache origin NAME`: the git ref goes last, so an experiment on `origin` always has its outputs on
the DVC remote, and a task killed before that left nothing another task would trust. The driver then pulls the refs
and tabulates them exactly as the local sweep does (experiments/sweep.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lora_mnist.cli import LoraMnistError
from lora_mnist.sweep.grid import Grid, targets_for

if TYPE_CHECKING:  # distributed loads only where a sweep runs on Dask
    from distributed import Client, Future

GIT_TIMEOUT_S = 120
DVC_TIMEOUT_S = 3600  # one experiment on the real data, pretraining included: a few minutes on two cores
CONNECT_TIMEOUT_S = 20
NO_WORKER_GRACE_S = 600  # a sweep with no worker left gives up after this, rather than wait forever


class SweepError(LoraMnistError):
    """A scheduler, remote or command the distributed sweep needs failed; the message names it."""


def _run(cmd: list[str], cwd: Path, what: str, timeout: float, keep_fds: tuple[int, ...] = ()
         ) -> subprocess.CompletedProcess:
    """Run a command in its own session (`keep_fds` inherited); a failure or a timeout (which stops the command and
    every process it started) is a SweepError naming `what` with the command's last words."""
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, pass_fds=keep_fds) as popen:
        try:
            out, err = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.communicate()
            raise SweepError(f"{what}: `{' '.join(cmd)}` did not finish within {timeout:.0f} s") from None
    proc = subprocess.CompletedProcess(cmd, popen.returncode, out, err)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-5:]
        raise SweepError(f"{what}: `{' '.join(cmd)}` exited {proc.returncode}: " + " / ".join(tail))
    return proc


def experiment_name(setting: dict[str, str]) -> str:
    """The experiment's name, the same on every machine and every run: how a restarted sweep finds finished work."""
    replay = float(setting["finetune.replay"])
    return (f"sweep-p{setting['pretrain.seed']}-f{setting['finetune.seed']}-r{setting['lora.rank']}"
            f"-x{replay:g}".replace(".", "_"))


def settings(grid: Grid) -> list[dict[str, str]]:
    """Every experiment of the grid as `-S` values, pretraining seed first; each seed's first setting is the one
    that trains its model (the local sweep's anchor: first fine-tuning seed, smallest rank, first replay)."""
    out = []
    for p in grid.pretrain_seeds:
        for f in grid.finetune_seeds:
            for r in sorted(grid.ranks):
                for x in grid.replays:
                    out.append({"pretrain.seed": str(p), "finetune.seed": str(f), "lora.rank": str(r),
                                "finetune.replay": repr(float(x)), "lora.targets": f"[{','.join(targets_for(r))}]"})
    return out


def exp_ref(commit: str, name: str) -> str:
    """Where DVC keeps an experiment of baseline `commit` in git (and `dvc exp push` puts it on the remote)."""
    return f"refs/exps/{commit[:2]}/{commit[2:]}/{name}"


def on_origin(root: Path, commit: str) -> set[str]:
    """Names of the experiments of `commit` already on `origin`."""
    out = _run(["git", "ls-remote", "origin", f"refs/exps/{commit[:2]}/{commit[2:]}/*"], root,
               "git remote origin", GIT_TIMEOUT_S).stdout
    return {line.rsplit("/", 1)[1] for line in out.splitlines() if line.strip()}


@contextlib.contextmanager
def _clone_lock(root: Path) -> Iterator[int]:
    """One experiment at a time in a clone, whatever the worker's thread count; yields the lock's descriptor, which
    the task's commands inherit: if the worker dies, the lock stays held until the dvc it started has ended too."""
    path = root / ".git" / "lora-mnist-sweep.lock"
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield f.fileno()


def _push_uncached_outputs(root: Path) -> None:
    """Push the objects of the workspace's `cache: false` metrics and plots to the DVC remote. The run cache stores
    them (a stage restored from it must recreate them), but `dvc push` skips them: without this, a stage another
    worker ran could never be restored here, and every stage with a git-tracked metric or plot (all four torch
    stages) would re-run on each machine."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        objs = {out.hash_info for stage in repo.index.stages for out in stage.outs  # those this clone has
                if not out.use_cache and out.hash_info and out.hash_info.value
                and repo.cache.local.exists(out.hash_info.value)}
        failed = repo.cloud.push(objs).failed if objs else set()
    if failed:
        raise SweepError(f"DVC remote: {len(failed)} run-cache objects of metrics and plots failed to upload")


def run_experiment(commit: str, name: str, setting: dict[str, str]) -> dict:
    """The Dask task: one experiment in this worker's clone (its working directory); returns what it did and the
    seconds each phase took."""
    root, times, started = Path.cwd(), {}, time.time()
    if not (root / "dvc.yaml").is_file() or not (root / ".git").exists():
        raise SweepError(f"worker on {socket.gethostname()}: {root} is not a clone of the project: start "
                         "`dask worker` from inside the clone")
    skipped = {"name": name, "skipped": True, "worker": f"{socket.gethostname()}:{root}"}
    with _clone_lock(root) as fd:
        def run(cmd: list[str], what: str, timeout: float = GIT_TIMEOUT_S) -> subprocess.CompletedProcess:
            return _run(cmd, root, what, timeout, keep_fds=(fd,))

        t = time.perf_counter()
        if name in on_origin(root, commit):  # a retried task whose first try got this far, or a parallel driver
            return skipped
        run(["git", "fetch", "-q", "origin"], "git fetch origin")
        run(["git", "checkout", "-q", "-f", "--detach", commit], f"git checkout {commit[:8]}")
        times["fetch_s"] = time.perf_counter() - t
        t = time.perf_counter()
        run(["dvc", "pull", "-q", "-f", "--run-cache"], "dvc pull --run-cache (DVC remote)", DVC_TIMEOUT_S)
        times["pull_s"] = time.perf_counter() - t
        t = time.perf_counter()
        if run(["git", "for-each-ref", exp_ref(commit, name)], "git for-each-ref").stdout.strip():
            # A try in this clone was killed after its run: run again (its stages restore from the local run
            # cache), so that what is pushed next is this experiment's workspace, not the baseline's.
            run(["dvc", "exp", "remove", name], f"dvc exp remove {name}")
        args = [a for key, value in setting.items() for a in ("-S", f"{key}={value}")]
        # --pull: `dvc pull --run-cache` fetches the run records only; a stage another worker ran is restored, not
        # re-run, only if its outputs are fetched too, which --pull does for the records that match.
        proc = run(["dvc", "exp", "run", "--pull", "-n", name, *args], f"dvc exp run {name}", DVC_TIMEOUT_S)
        restored = re.findall(r"Stage '([^']+)' is cached - skipping run", proc.stdout)
        ran = sorted(set(re.findall(r"Running stage '([^']+)'", proc.stdout)) - set(restored))
        times["run_s"] = time.perf_counter() - t
        t = time.perf_counter()
        run(["dvc", "push", "-q", "--run-cache"], "dvc push --run-cache (DVC remote)", DVC_TIMEOUT_S)
        _push_uncached_outputs(root)
        try:
            run(["dvc", "exp", "push", "--no-cache", "origin", name], f"dvc exp push origin {name}")
        except SweepError:
            if name in on_origin(root, commit):  # another try (a restarted driver's) pushed it first: done
                return skipped
            raise
        times["push_s"] = time.perf_counter() - t
    return {"name": name, "skipped": False, "worker": f"{socket.gethostname()}:{root}", "ran": ran,
            "restored": sorted(set(restored)), "started": started, "ended": time.time(),
            **{k: round(v, 2) for k, v in times.items()}}


def preflight(root: Path, scheduler: str, timeout: float = CONNECT_TIMEOUT_S) -> Client:
    """Check, before any work, that the scheduler has a worker (waiting up to `timeout` s for each) and that origin
    and the DVC remote answer."""
    from distributed import Client

    try:
        client = Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise SweepError(f"Dask scheduler {scheduler} unreachable: {exc}") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        client.close()
        raise SweepError(f"Dask scheduler {scheduler}: no worker connected within {timeout:g} s (start "
                         "`dask worker " + scheduler + "` from inside each machine's clone)") from None
    try:
        url = _run(["git", "remote", "get-url", "origin"], root, "git remote origin (none configured: "
                   "`git remote add origin URL`)", GIT_TIMEOUT_S).stdout.strip()
        _run(["git", "ls-remote", "-q", "--heads", "origin"], root, f"git remote origin ({url}) unreachable",
             GIT_TIMEOUT_S)
        remote = _run(["dvc", "config", "core.remote"], root, "dvc config", GIT_TIMEOUT_S).stdout.strip()
        if not remote:
            raise SweepError("no default DVC remote: `dvc remote add -d NAME URL` (docs/scale.md)")
        # Not -q: its exit status would also say "out of sync"; without it, 0 unless the remote fails to answer.
        _run(["dvc", "status", "--cloud"], root, f"DVC remote {remote!r} unreachable", GIT_TIMEOUT_S * 2)
    except SweepError:
        client.close()
        raise
    return client


def publish(root: Path) -> str:
    """Push HEAD to origin and its cached inputs (and the run cache) to the DVC remote; return the commit."""
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], root, "git status", GIT_TIMEOUT_S).stdout
    if dirty.strip():
        raise SweepError("uncommitted changes: the workers run a commit, so commit them first:\n" + dirty.rstrip())
    branch = _run(["git", "rev-parse", "--abbrev-ref", "HEAD"], root, "git", GIT_TIMEOUT_S).stdout.strip()
    if branch == "HEAD":
        raise SweepError("HEAD is detached: check out a branch, the workers fetch it from origin")
    commit = _run(["git", "rev-parse", "HEAD"], root, "git", GIT_TIMEOUT_S).stdout.strip()
    _run(["dvc", "push", "-q", "--run-cache"], root, "dvc push --run-cache (DVC remote)", DVC_TIMEOUT_S)
    _run(["git", "push", "-q", "origin", f"HEAD:refs/heads/{branch}"], root, "git push origin", GIT_TIMEOUT_S)
    return commit


def plan(todo: list[dict[str, str]], anchors: bool = True) -> tuple[list[dict], dict[str, list[dict]]]:
    """The settings to submit now, and, by pretraining seed, those to submit once that seed's first setting has
    finished (with `anchors`): its model is then trained once, by that first task, and restored after."""
    if not anchors:
        return list(todo), {}
    first: dict[str, dict] = {}
    later: dict[str, list[dict]] = {}
    for s in todo:
        seed = s["pretrain.seed"]
        if seed in first:
            later.setdefault(seed, []).append(s)
        else:
            first[seed] = s
    return list(first.values()), later


def submit(client: Client, commit: str, todo: list[dict[str, str]]) -> dict[Future, dict[str, str]]:
    """One task per setting, no data between them (a dependency would pull a seed's settings onto one worker)."""
    return {client.submit(run_experiment, commit, experiment_name(s), s, key=f"{experiment_name(s)}-{commit[:12]}",
                          pure=False): s for s in todo}


def _as_completed_while_workers(client: Client, pending: set[Future], scheduler: str,
                                grace_s: float = NO_WORKER_GRACE_S, poll_s: float = 5) -> Iterator[Future]:
    """The futures of `pending` as they finish (the caller may add more meanwhile); a SweepError if the scheduler
    has had no worker for `grace_s` seconds (tasks would wait for one forever)."""
    from distributed import wait

    alone_since = None
    while pending:
        try:
            done = wait(list(pending), timeout=poll_s, return_when="FIRST_COMPLETED").done
        except TimeoutError:  # none finished meanwhile: check the workers, wait again
            done = set()
        pending -= done
        yield from done
        if pending and not client.scheduler_info()["workers"]:
            alone_since = alone_since or time.monotonic()
            if time.monotonic() - alone_since > grace_s:
                raise SweepError(f"Dask scheduler {scheduler}: no worker for {grace_s:.0f} s and {len(pending)} "
                                 "experiments left: start workers, then run the sweep again (finished ones are kept)")
        else:
            alone_since = None


def run_sweep(root: Path, scheduler: str, grid: Grid, anchors: bool = True,
              timeout: float = CONNECT_TIMEOUT_S) -> list[dict]:
    """Run every experiment of `grid` not yet on origin on the scheduler's workers, then pull all of them;
    returns each task's record (failed ones as {"name", "error"})."""
    client = preflight(root, scheduler, timeout)
    try:
        commit = publish(root)
        done = on_origin(root, commit)
        todo = [s for s in settings(grid) if experiment_name(s) not in done]
        print(f"{len(todo)} of {len(todo) + len(done & set(map(experiment_name, settings(grid))))} experiments to "
              f"run on {len(client.scheduler_info()['workers'])} workers ({scheduler}), commit {commit[:8]}",
              flush=True)
        now, later = plan(todo, anchors)
        futures = submit(client, commit, now)
        pending, records = set(futures), []
        for future in _as_completed_while_workers(client, pending, scheduler):
            seed = futures[future]["pretrain.seed"]
            more = submit(client, commit, later.pop(seed, []))  # its model is in the run cache now (if it ran)
            futures.update(more)
            pending.update(more)
            try:
                rec = future.result()
            except Exception as exc:  # a failed experiment is reported and left out, as in the local sweep
                rec = {"name": experiment_name(futures[future]), "error": str(exc)}
                print(f"  {rec['name']}: failed: {exc}", flush=True)
            else:
                print(f"  {rec['name']}: " + ("already on origin" if rec["skipped"] else
                      f"pull {rec['pull_s']:.1f} s, run {rec['run_s']:.1f} s, push {rec['push_s']:.1f} s, ran "
                      f"{','.join(rec['ran']) or 'nothing'} ({rec['worker']})"), flush=True)
            records.append(rec)
    finally:
        client.close()
    names = sorted(on_origin(root, commit) & set(map(experiment_name, settings(grid))))
    if names:  # the refs and their git-tracked metrics; outputs stay on the remote until someone needs them
        _run(["dvc", "exp", "pull", "--no-cache", "-f", "origin", *names], root, "dvc exp pull origin", DVC_TIMEOUT_S)
    return records
