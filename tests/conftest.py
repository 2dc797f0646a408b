"""Fixtures shared by the end-to-end modules: one synthetic project, built once per test session."""

from __future__ import annotations

import subprocess

from lora_mnist.numerics import pin

pin("portable")  # the tests' own process computes as the default pipeline does; before torch loads

import fcntl  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402
from e2e import Repo, make_repo, repo_env  # noqa: E402


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[Repo, subprocess.CompletedProcess]:
    """The synthetic project after a full `dvc repro`, results committed; and what that repro printed. Built once
    per test run: the first xdist worker to need it builds it under a lock, the others wait and share it (tests read
    it, and copy it to change anything: e2e.copy_of)."""
    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if worker_id != "master" else shared  # the run's directory, above each worker's own
    base, record = shared / "e2e-built", shared / "e2e-built" / "repro.json"
    with open(shared / "e2e-built.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if the build fails
        if not record.is_file():  # first, or after another worker's failed try: from scratch
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir()
            repo = make_repo(base)
            proc = repo.dvc("repro")
            repo.commit("results")
            record.write_text(json.dumps({"args": proc.args, "returncode": proc.returncode, "stdout": proc.stdout,
                                          "stderr": proc.stderr}))
    done = json.loads(record.read_text())
    return Repo(base / "project", repo_env(base)), subprocess.CompletedProcess(**done)
