"""A scratch copy of the project in a temporary git repo, on synthetic MNIST, and helpers to drive `dvc` in it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from synthetic import write_expected, write_mnist

from lora_mnist.numerics import PINNED

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore", ".dvc/plots", "stages",
           "src", "experiments/sweep.py"]
# Small enough to run in seconds, big enough to learn: 784 -> 32 -> 16 -> 10 on 400 training images.
SMALL = {"model": {"hidden_size_1": 32, "hidden_size_2": 16}, "pretrain": {"batch_size": 20, "epochs": 2},
         "finetune": {"steps": 8, "batch_size": 5},
         "zoo": {"digits": [0, 1], "compose": [0, 1], "steps": 8, "batch_size": 5}}

# The local sweep's grid (conftest.swept): one pretrained model (the built one), fine-tuning seeds 0 (the built
# project's: its full fine-tuning is restored from the run cache) and 1 (trains both), rank 2: one LoRA and one full
# row over two seeds.
GRID = ("--pretrain-seeds", "0", "--finetune-seeds", "0,1", "--ranks", "2", "--replays", "0.0", "--no-anchors")


class Repo:
    """A scratch copy of the project, with helpers to run commands in it."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path, self.env = path, env

    def run(self, *cmd: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command in the repo (`env` adds to the repo's environment); a failure fails the test."""
        proc = subprocess.run(cmd, cwd=self.path, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=300)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def dvc(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run the venv's dvc in the repo."""
        return self.run(str(BIN / "dvc"), *args, check=check, env=env)

    def ran(self, proc: subprocess.CompletedProcess) -> set[str]:
        """Names of the stages whose command a `dvc repro` / `dvc exp run` actually executed."""
        return set(re.findall(r"Running stage '([^']+)'", proc.stdout)) - self.restored(proc)

    def restored(self, proc: subprocess.CompletedProcess) -> set[str]:
        """Names of the stages DVC restored from its run cache instead of running them."""
        return set(re.findall(r"Stage '([^']+)' is cached - skipping run", proc.stdout))

    def snapshot(self, *rels: str) -> dict[str, bytes]:
        """The bytes of each file under `rels` (files or directories), by relative path."""
        files = [f for rel in rels for f in ([self.path / rel] if (self.path / rel).is_file()
                                             else sorted((self.path / rel).rglob("*"))) if f.is_file()]
        return {str(f.relative_to(self.path)): f.read_bytes() for f in files}

    def json(self, rel: str) -> dict:
        return json.loads((self.path / rel).read_text())

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "--allow-empty", "-m", message)


def make_repo(base: Path) -> Repo:
    """Copy the project into `base/project`, point it at synthetic MNIST with SMALL params, commit it."""
    path = base / "project"
    for rel in PROJECT:
        src, dst = ROOT / rel, path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst)
    expected = write_mnist(base / "mnist", n_train=400, n_test=200)
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["data"]["source"] = str(base / "mnist")
    for section, values in SMALL.items():
        params[section].update(values)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_expected(base / "expected.json", expected)
    repo = Repo(path, repo_env(base))
    repo.run("git", "init", "-q", "-b", "main")
    repo.commit("project")
    return repo


def repo_env(base: Path) -> dict[str, str]:
    """The environment of the project make_repo(base) made: this venv first, the synthetic data's checksums."""
    return {  # without the pytest process's pins: each stage sets its numerics mode's own (numerics.pin)
        **{k: v for k, v in os.environ.items() if k not in PINNED},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "LORA_MNIST_EXPECTED_MD5": str(base / "expected.json"),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
        "DVC_NO_ANALYTICS": "1",
    }


def copy_of(built: tuple[Repo, subprocess.CompletedProcess], dest: Path) -> Repo:
    """A private copy of a built project (git history, DVC cache and run cache included)."""
    shutil.copytree(built[0].path, dest, symlinks=True)
    return Repo(dest, built[0].env)


def experiment_locks(repo: Repo) -> dict[tuple[int, int], str]:
    """The dvc.lock of each experiment in the repo (its params, dependencies and every output's hash), by
    (fine-tuning seed, LoRA rank)."""
    refs = repo.run("git", "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    locks = {}
    for ref in refs:
        params = yaml.safe_load(repo.run("git", "show", f"{ref}:params.yaml").stdout)
        locks[params["finetune"]["seed"], params["lora"]["rank"]] = repo.run("git", "show", f"{ref}:dvc.lock").stdout
    return locks
