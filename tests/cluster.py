"""Real parts for the distributed sweep's tests, all on 127.0.0.1: a WebDAV server as the DVC remote, a bare git
repository as `origin`, a Dask scheduler and workers, each worker in its own clone (a "machine")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from e2e import BIN, Repo

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 60


def wait_for(path: Path, what: str, proc: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> str:
    """Wait for a file a starting process writes; fail with its log if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text()
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode} before it was ready")
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready within {timeout} s")


class Processes:
    """Processes started in their own sessions, so that stopping one stops its children (dvc, stages) too."""

    def __init__(self, logs: Path) -> None:
        self.logs, self.procs = logs, {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
        """Start `cmd` in a new session, its output in logs/<name>.log."""
        with open(self.logs / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL the process's whole session (a worker and the dvc it runs) and reap it."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        """SIGTERM every session, then SIGKILL what is left of it 10 s later (children that ignored the TERM too)."""
        for name in list(self.procs):
            proc = self.procs[name]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            self.kill(name)


class Cluster:
    """The project with `origin` and a WebDAV DVC remote, a scheduler and `workers` workers in their own clones."""

    def __init__(self, repo: Repo, base: Path, workers: int = 2) -> None:
        self.repo, self.base, self.procs = repo, base, Processes(base / "logs")
        try:
            self._start(workers)
        except BaseException:
            self.procs.stop_all()  # whatever started before the failure
            raise

    def _start(self, workers: int) -> None:
        repo, base = self.repo, self.base
        env = repo.env
        dav = self.procs.start("webdav", [sys.executable, str(HERE / "webdav_server.py"), str(base / "dav"),
                                          str(base / "dav.port")], base, env)
        port = wait_for(base / "dav.port", "the WebDAV server", dav).strip()
        (base / "dav" / "cache").mkdir(parents=True, exist_ok=True)
        self.remote_url = f"webdav://127.0.0.1:{port}/cache"
        self.origin = base / "origin.git"
        repo.run("git", "init", "-q", "--bare", "-b", "main", str(self.origin))
        repo.run("git", "remote", "add", "origin", str(self.origin))
        repo.dvc("remote", "add", "-d", "shared", self.remote_url)
        repo.commit("the team's remotes")
        repo.run("git", "push", "-q", "origin", "main")
        sched = self.procs.start("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                               "--no-dashboard", "--scheduler-file", str(base / "scheduler.json")],
                                 base, env)
        self.address = json.loads(wait_for(base / "scheduler.json", "the Dask scheduler", sched))["address"]
        self.clones = {}
        for i in range(1, workers + 1):
            self.add_worker(f"w{i}")

    def add_worker(self, name: str) -> Path:
        """`git clone origin` and a `dask worker` started from inside the clone, one task at a time."""
        clone = self.base / name
        if not clone.exists():
            self.repo.run("git", "clone", "-q", str(self.origin), str(clone))
        self.procs.start(name, [str(BIN / "dask"), "worker", self.address, "--nthreads", "1", "--no-nanny",
                                "--name", name, "--no-dashboard"], clone, self.repo.env)
        self.clones[name] = clone
        return clone

    def worker_running(self, marker: bytes) -> str | None:
        """The worker whose clone runs a process whose command line holds `marker` now (its cwd there), if any."""
        clones = {str(path.resolve()): name for name, path in self.clones.items() if name in self.procs.procs}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                for clone, name in clones.items():
                    if cwd == clone or cwd.startswith(clone + "/"):
                        return name
        return None

    def start_sweep(self, *args: str) -> tuple[subprocess.Popen, Path]:
        """Start the driver (experiments/sweep.py --scheduler) in the project; returns it and its log."""
        log = self.base / "logs" / f"driver-{time.monotonic_ns()}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([str(BIN / "python"), "experiments/sweep.py", "--scheduler", self.address, *args],
                                    cwd=self.repo.path, env=self.repo.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        return proc, log

    def sweep(self, *args: str, timeout: float = 300) -> tuple[int, str]:
        """Run the driver to its end: exit status and output."""
        proc, log = self.start_sweep(*args)
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        return proc.returncode, log.read_text()
