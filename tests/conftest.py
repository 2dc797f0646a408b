"""Fixtures shared by the end-to-end modules: one synthetic project, built once per test session."""

from __future__ import annotations

import subprocess

import pytest
from e2e import Repo, make_repo


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Repo, subprocess.CompletedProcess]:
    """The synthetic project after a full `dvc repro`, results committed; and what that repro printed."""
    repo = make_repo(tmp_path_factory.mktemp("e2e"))
    proc = repo.dvc("repro")
    repo.commit("results")
    return repo, proc
