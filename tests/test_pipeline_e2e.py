"""End to end: the real `dvc` CLI on a temporary git repo with the project's pipeline and synthetic MNIST.

One `dvc repro` builds the pipeline (`built`, once per session, conftest.py); every other test gets its own copy of that
committed state (`repo`), so the tests are independent of each other and of their order. What a unit test covers as
well (verify's tampering cases, export, the LoRA-off check) lives in the unit tests (test_verify.py).
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from e2e import BIN, Repo, copy_of

from lora_mnist.numerics import has_avx2

STAGES = {"download", "pretrain", "snapshot", "select_target", "finetune", "finetune_full", "zoo", "verify", "numerics"}
COMPUTE_STAGES = {"pretrain", "finetune_full", "finetune", "zoo"}  # the torch stages: each reads `numerics`
LORA_STAGES = {"finetune", "verify"}  # what a change of lora.* re-runs: one torch process, then the proof
LORA_OUTS = ("models/lora", "metrics/finetune.json", "metrics/evaluate.json", "metrics/analyze.json",
             "metrics/summary", "metrics/verify.json", "plots/evaluate", "plots/finetune")


@pytest.fixture
def repo(built: tuple[Repo, subprocess.CompletedProcess], tmp_path: Path) -> Repo:
    """A private copy of the built project: each test starts from the same committed state."""
    return copy_of(built, tmp_path / "project")


def test_full_repro_runs_every_stage_and_writes_the_outputs(built: tuple[Repo, subprocess.CompletedProcess]) -> None:
    repo, proc = built
    assert repo.ran(proc) == STAGES
    assert "Traceback" not in proc.stderr
    ev = repo.json("metrics/evaluate.json")
    for key in ("base", "lora"):
        assert 0 <= ev["accuracy"][key] <= 1
        assert set(ev["wrong"][key]) == {str(d) for d in range(10)}
    assert ev["target"]["digit"] == repo.json("metrics/select_target.json")["target"]["digit"]
    assert ev["target"]["wrong_base"] == ev["wrong"]["base"][str(ev["target"]["digit"])]
    pre = repo.json("metrics/pretrain.json")["test"]  # select_target chose from these, without torch
    assert pre["wrong"] == ev["wrong"]["base"] and pre["accuracy"] == ev["accuracy"]["base"]
    assert ev["param_count"]["lora"] == (784 + 32) + (32 + 16) + (16 + 10)  # rank 1 on 784 -> 32 -> 16 -> 10
    verify = repo.json("metrics/verify.json")
    assert verify["passed"] is True and verify["max_abs_diff"] == 0.0 and all(verify["checks"].values())
    # 6 pretrained tensors, then per adapter (the LoRA one, zoo 0, zoo 1, the pair): 6 base digests and 6 factors
    assert verify["tensors_checked"] == 6 + 4 * (6 + 6)
    assert repo.json("metrics/filter.json") == {"digit": ev["target"]["digit"], "size": 40, "others": 360, "pool": 400}
    full = repo.json("metrics/finetune_full.json")
    assert full["trainable_params"] == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert full["accuracy"]["base"] == ev["accuracy"]["base"] and 0 <= full["accuracy"]["full"] <= 1
    summaries = {name: repo.json(f"metrics/summary/{name}.json") for name in ("evaluate", "finetune_full", "verify", "zoo")}
    headline = {k: v for s in summaries.values() for k, v in s.items()}
    assert len(headline) == sum(map(len, summaries.values()))  # no key in two files: no path prefix in the table
    assert headline["acc_lora"] == ev["accuracy"]["lora"] and headline["wrong_lora"] == ev["target"]["wrong_lora"]
    assert headline["verified"] is True and headline["acc_full"] == full["accuracy"]["full"]
    numerics = repo.json("metrics/numerics.json")
    assert numerics["torch_device"] == "cpu" and numerics["openblas_threads"] == 1  # the spectra's BLAS: one thread
    assert numerics["numerics"] == "portable"  # the default mode, every stage
    if has_avx2():  # portable: only what decides the bits, the same on every x86-64 CPU with AVX2 (no CPU name,
        assert not {"cpu", "cpu_vendor", "cpu_family_model", "cpu_isa", "torch_threads"} & set(numerics)  # no count)
    assert {"aten_capability", "mkl_cbwr", "torch", "numpy", "openblas_coretype"} <= set(numerics)
    assert numerics["cpu_products"] == "numpy OpenBLAS"  # every compute stage's products, on the CPU, in portable
    # One pass over the test set per experiment: the base's answers are pretrain's, checked on the first batch.
    assert ev["checks"] == {"lora_off_logits_equal_pretrained": True, "lora_off_images_checked": 200}
    runs = repo.path / ".dvc/cache/runs"
    assert len([d for d in runs.glob("*/*") if d.is_dir()]) == len(STAGES)  # each stage is in the run cache
    analyze = repo.json("metrics/analyze.json")
    assert analyze["size"]["lora"]["trainable_params"] == ev["param_count"]["lora"]
    assert analyze["size"]["full"] == repo.json("metrics/analyze_full.json")["size"]
    for layer in ("linear1", "linear2", "linear3"):
        assert analyze["layers"][layer]["lora"]["rank_99"] == 1  # a rank-1 update is rank 1
        assert analyze["layers"][layer]["full"]["rank_99"] >= 1
    # An experiment keeps the adapter only: the full models are made on demand (make export, test_verify.py).
    assert sorted(p.name for p in (repo.path / "models/lora").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "training.json"]
    assert sorted(p.name for p in (repo.path / "models/zoo").iterdir()) == ["0", "1", "pair"]
    for rel in ("plots/finetune_full/spectra.png", "plots/zoo/heatmap.png"):
        assert (repo.path / rel).read_bytes().startswith(b"\x89PNG"), rel
    assert len((repo.path / "plots/pretrain/loss.tsv").read_text().splitlines()) == 1 + 40
    assert not list(repo.path.rglob(".tmp-*")), "an atomic write left a temp file behind"


def test_plots_show_each_plot_once_with_its_file(repo: Repo) -> None:
    shown = json.loads(repo.dvc("plots", "show", "--json").stdout)["data"]
    spec = yaml.safe_load((repo.path / "dvc.yaml").read_text())
    declared = {path: opts for stage in spec["stages"].values() for entry in stage.get("plots", [])
                for path, opts in entry.items()}
    top = dict(next(iter(entry.items())) for entry in spec["plots"])
    assert sorted(shown) == sorted([*declared, *top])  # one plot per declared file; top-level ones draw several
    for plot_id, renders in shown.items():
        for render in renders:
            if render["type"] == "vega":
                assert render["content"]["title"]["text"] == declared.get(plot_id, {}).get("title", plot_id)
            else:
                assert (repo.path / plot_id).is_file()
    spectra_id, wrong_id = (next(k for k in top if k.startswith(s)) for s in ("Singular values", "Test errors"))
    spectra = shown[spectra_id][0]["content"]
    assert spectra["encoding"]["y"]["scale"]["type"] == "log"
    assert {row["filename"] for row in spectra["data"]["values"]} == {Path(f).name for f in top[spectra_id]["y"]}
    wrong = repo.json("plots/evaluate/wrong_per_digit.json")  # base and LoRA, one row per digit
    ev = repo.json("metrics/evaluate.json")["wrong"]
    assert wrong == [{"digit": d, "base": ev["base"][str(d)], "lora": ev["lora"][str(d)]} for d in range(10)]
    assert len(shown[wrong_id][0]["content"]["data"]["values"]) == 2 * 10  # a line per model


def test_second_repro_runs_nothing_whatever_bytecode_python_left(repo: Repo) -> None:
    # Bytecode appears next to whatever a process imported: were it hashed, a fresh clone (none) and a worker that
    # ran stages (some) would disagree on every stage's code deps, and no run cache entry would match across them.
    pycache = repo.path / "src/lora_mnist/base/__pycache__"
    pycache.mkdir(exist_ok=True)
    (pycache / "stray.cpython-311.pyc").write_bytes(b"\x00" * 16)
    proc = repo.dvc("repro")
    assert repo.ran(proc) == set() and repo.restored(proc) == set()  # every stage: "didn't change, skipping"
    assert proc.stdout.count("didn't change, skipping") == len(STAGES)


def test_push_pull_and_artifacts_get_need_no_recompute(repo: Repo, tmp_path: Path) -> None:
    remote = tmp_path / "dvc-remote"
    repo.dvc("remote", "add", "--default", "shared", str(remote))
    repo.dvc("push")
    repo.commit("add a shared DVC remote")
    clone = Repo(tmp_path / "clone", repo.env)
    repo.run("git", "clone", "-q", str(repo.path), str(clone.path))
    clone.dvc("pull")
    assert json.loads(clone.dvc("status", "--json").stdout) == {}  # up to date: `dvc repro` has nothing to do
    for rel in ("models/pretrained.safetensors", "models/lora/adapter_model.safetensors",
                "data/raw/MNIST/raw/t10k-labels-idx1-ubyte"):
        assert (clone.path / rel).read_bytes() == (repo.path / rel).read_bytes()
    # dvc.yaml's artifacts: a registered version (a GTO tag) is fetched from the repo and its remote by name.
    repo.run("git", "tag", "-a", "lora-adapter@v1.0.0", "-m", "Registered the LoRA adapter")
    fetched = tmp_path / "elsewhere"
    fetched.mkdir()
    proc = repo.run(str(BIN / "dvc"), "artifacts", "get", str(repo.path), "lora-adapter", "-o", str(fetched / "lora"))
    assert repo.snapshot("models/lora") == {f"models/lora/{p.name}": p.read_bytes()
                                            for p in (fetched / "lora").iterdir()}, proc.stdout


def _read_until(stream, pattern: str, timeout: float) -> str:
    """What `stream` printed until `pattern` matched; a test failure if it ends or `timeout` passes first."""
    selector, seen, deadline = selectors.DefaultSelector(), "", time.monotonic() + timeout
    selector.register(stream, selectors.EVENT_READ)
    while not re.search(pattern, seen):
        left = deadline - time.monotonic()
        assert left > 0 and selector.select(left), f"no match for {pattern!r} within {timeout} s:\n{seen}"
        chunk = os.read(stream.fileno(), 256).decode(errors="replace")
        assert chunk, f"the stream ended before {pattern!r}:\n{seen}"
        seen += chunk
    return seen


def test_killed_stage_leaves_nothing_half_written_and_its_forced_rerun_is_bit_identical(repo: Repo) -> None:
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    params["pretrain"]["epochs"] = 5000  # long enough to be killed mid-training
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.Popen([str(BIN / "dvc"), "repro", "--single-item", "pretrain"], cwd=repo.path, env=repo.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _read_until(proc.stderr, r"pretrain:\s+\d+%.*\| *[1-9]\d*/", timeout=120)  # training has made progress
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not (repo.path / "models/pretrained.safetensors").exists()  # dvc removed the old output; none written
    assert not (repo.path / "metrics/pretrain.json").exists()
    repo.run("git", "checkout", "--", "params.yaml")
    # --force: DVC would otherwise check the lost outputs out of its cache (dvc.lock still names them). Pretraining
    # re-runs to the same bits (dvc.lock, metrics and plots unchanged), so nothing after it has anything to re-run.
    # The other torch stages' re-runs are compared bit for bit where a scenario runs them twice anyway: fine-tuning
    # and full fine-tuning in the local and the Dask sweep (test_sweep_dask_e2e), the zoo in test_zoo_e2e.
    rerun = repo.dvc("repro", "--force", "--single-item", "pretrain")
    assert repo.ran(rerun) == {"pretrain"}
    assert json.loads(repo.dvc("status", "--json").stdout) == {}
    assert repo.run("git", "status", "--porcelain").stdout == ""
    assert not list(repo.path.rglob(".tmp-*"))


PRETRAIN_OUTS = ("models/pretrained.safetensors", "models/pretrained_test_logits.safetensors", "metrics/pretrain.json",
                 "metrics/numerics/pretrain.json", "plots/pretrain/loss.tsv")


def test_bad_param_is_one_clear_error_and_once_fixed_restores_from_the_run_cache(repo: Repo) -> None:
    before = repo.snapshot(*PRETRAIN_OUTS)
    proc = repo.dvc("exp", "run", "-S", "pretrain.epochs=0", check=False)
    assert proc.returncode != 0
    assert "error: params: pretrain.epochs = 0 is invalid: expected an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (repo.path / "models/pretrained.safetensors").exists()  # DVC removed the outputs before running
    repo.run("git", "checkout", "--", "params.yaml")
    fixed = repo.dvc("repro")
    assert repo.restored(fixed) == {"pretrain"} and repo.ran(fixed) == set()  # no stage command executed
    assert repo.snapshot(*PRETRAIN_OUTS) == before
    assert repo.run("git", "status", "--porcelain").stdout == ""


def _cache_objects(repo: Repo) -> dict[Path, int]:
    return {p: p.stat().st_size for p in (repo.path / ".dvc/cache/files").rglob("*") if p.is_file()}


def test_rank_experiments_run_one_torch_stage_store_adapter_sizes_and_restore(repo: Repo) -> None:
    before, cached = repo.snapshot(*LORA_OUTS), _cache_objects(repo)
    model_bytes = (repo.path / "models/pretrained.safetensors").stat().st_size
    proc = repo.dvc("exp", "run", "-S", "lora.rank=8")  # the widest columns (README: 2, 4 and 8 on the real data)
    assert repo.ran(proc) == LORA_STAGES  # not the zoo, not full fine-tuning, not pretraining
    assert repo.json("metrics/evaluate.json")["param_count"]["lora"] == 8 * 890
    added = {p: n for p, n in _cache_objects(repo).items() if p not in cached}
    assert added and max(added.values()) < model_bytes / 2, added  # adapters, metrics, plots: never a full model
    diff = json.loads(repo.dvc("metrics", "diff", "--json").stdout)["metrics/summary/evaluate.json"]
    assert diff["lora_params"] == {"old": 890, "new": 8 * 890, "diff": 7 * 890}
    table = repo.run("env", "COLUMNS=160", str(BIN / "dvc"), "exp", "show", "--only-changed", "--no-pager").stdout
    assert "lora.rank" in table and "lora_params" in table and "…" not in table, table  # fits, no column cut

    back = repo.dvc("exp", "run", "-S", "lora.rank=1")
    assert repo.ran(back) == set() and repo.restored(back) == LORA_STAGES
    assert repo.snapshot(*LORA_OUTS) == before


def test_choosing_the_target_on_held_out_images_reruns_from_pretraining(repo: Repo) -> None:
    proc = repo.dvc("exp", "run", "-S", "target.select_on=validation", "finetune")  # finetune and what it reads
    assert repo.ran(proc) == {"pretrain", "select_target", "finetune_full", "finetune"}  # pretraining sees only
    # the first five sixths (the zoo's digit sets in validation mode: tests/test_zoo.py)
    pretrain = repo.json("metrics/pretrain.json")
    assert pretrain["train_size"] == 400 - 66 and pretrain["validation_size"] == 66
    assert sum(pretrain["validation"]["wrong"].values()) <= 66 and "test" in pretrain
    selection = repo.json("metrics/select_target.json")
    assert selection["target"]["chosen_on"] == "validation"
    assert selection["chosen_on_wrong"] == pretrain["validation"]["wrong"]
    assert selection["target"]["digit"] == repo.json("metrics/evaluate.json")["target"]["digit"]
    assert repo.json("metrics/evaluate.json")["target"]["chosen_on"] == "validation"
    assert repo.json("metrics/filter.json")["pool"] == 400 - 66


def test_switching_numerics_changes_exactly_the_compute_stages(repo: Repo) -> None:
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    params["numerics"] = "fast"
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(repo.dvc("status", "--json").stdout)
    assert set(status) == COMPUTE_STAGES, status  # what `dvc repro` runs first; the rest re-runs only if outputs change
    for stage in COMPUTE_STAGES:
        assert status[stage] == [{"changed deps": {"params.yaml": {"numerics": "modified"}}}], status[stage]
