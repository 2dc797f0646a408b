"""Fixtures shared by the end-to-end modules: the synthetic project built once per test session, and the local
sweep run once on it; whichever xdist worker needs one first makes it, the others wait and share it."""

from __future__ import annotations

import subprocess

from lora_mnist.numerics import pin

pin("portable")  # the tests' own process computes as the default pipeline does; before torch loads

import fcntl  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from e2e import BIN, GRID, Repo, copy_of, make_repo, repo_env  # noqa: E402


def _once(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str,
          make: Callable[[Path], subprocess.CompletedProcess]) -> tuple[Path, subprocess.CompletedProcess]:
    """`make(folder)` run once per test run, under a lock, in a folder every worker sees; the folder and what the
    command printed. A failed try leaves no record: the next worker to need it starts again from scratch."""
    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if worker_id != "master" else shared  # the run's directory, above each worker's own
    base, record = shared / name, shared / name / "done.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if `make` fails
        if not record.is_file():
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir()
            proc = make(base)
            record.write_text(json.dumps({"args": proc.args, "returncode": proc.returncode, "stdout": proc.stdout,
                                          "stderr": proc.stderr}))
    return base, subprocess.CompletedProcess(**json.loads(record.read_text()))


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[Repo, subprocess.CompletedProcess]:
    """The synthetic project after a full `dvc repro`, results committed; and what that repro printed. Tests read
    it, and copy it to change anything (e2e.copy_of)."""
    def make(base: Path) -> subprocess.CompletedProcess:
        repo = make_repo(base)
        proc = repo.dvc("repro")
        repo.commit("results")
        return proc

    base, proc = _once(tmp_path_factory, worker_id, "e2e-built", make)
    return Repo(base / "project", repo_env(base)), proc


@pytest.fixture(scope="session")
def swept(built: tuple[Repo, subprocess.CompletedProcess], tmp_path_factory: pytest.TempPathFactory,
          worker_id: str) -> Repo:
    """A copy of the built project after `experiments/sweep.py` ran GRID through DVC's queue on two workers."""
    def make(base: Path) -> subprocess.CompletedProcess:
        repo = copy_of(built, base / "project")
        # Its output to a file, not a pipe: DVC's queue workers are daemons that inherit it and outlive the sweep by
        # seconds, and a pipe is only read to its end once they have gone too.
        with open(base / "sweep.log", "w") as log:
            proc = subprocess.run([str(BIN / "python"), "experiments/sweep.py", *GRID, "--jobs", "2"], cwd=repo.path,
                                  env=repo.env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
        out = (base / "sweep.log").read_text()
        if proc.returncode != 0:
            pytest.fail(f"experiments/sweep.py exited {proc.returncode}\n{out}")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")

    base, _ = _once(tmp_path_factory, worker_id, "e2e-swept", make)
    return Repo(base / "project", built[0].env)


# Heaviest first, so that neither xdist worker is left with a long module while the other idles (pyproject.toml
# turns off xdist's own order, by test count): the built project's module on one worker while the other runs the
# torch subprocess tests (which need no built project), then the two sweeps (the Dask one reads the local one's
# result: whichever worker asks first makes it), then the rest in file order, to whichever worker is free.
FIRST = ("test_pipeline_e2e.py", "test_determinism.py", "test_sweep_e2e.py", "test_sweep_dask_e2e.py",
         "test_zoo_e2e.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the modules as FIRST says; sorted() is stable, so tests keep their order within a module."""
    rank = {name: i for i, name in enumerate(FIRST)}
    items[:] = sorted(items, key=lambda item: rank.get(item.path.name, len(FIRST)))
