"""dvc.yaml tells the truth: each stage depends on exactly the library modules its script imports."""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
# Each stage's definition; a `foreach` stage's is its `do` template.
SPECS = {name: spec.get("do", spec) for name, spec in DVC["stages"].items()}


def imported_modules(path: Path) -> set[str]:
    """lora_mnist modules imported anywhere in a file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lora_mnist."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lora_mnist.")}
    return found


def closure(script: Path) -> set[str]:
    """Paths of every library module a script reaches through imports."""
    todo, seen = list(imported_modules(script)), set()
    while todo:
        module = todo.pop()
        rel = "src/" + module.replace(".", "/") + ".py"
        if rel not in seen:
            seen.add(rel)
            todo += imported_modules(ROOT / rel)
    return seen


@pytest.mark.parametrize("stage", sorted(DVC["stages"]))
def test_stage_deps_list_exactly_the_modules_it_imports(stage):
    spec = SPECS[stage]
    assert spec["cmd"].startswith(f"PYTHONPATH=src python stages/{stage}.py ")
    script = f"stages/{stage}.py"
    listed = {d for d in spec["deps"] if d.startswith("src/")}
    assert script in spec["deps"]
    assert listed == closure(ROOT / script)


# Stages that only read and compare stored tensors/JSON: importing torch would cost each ~2 s (issue 5).
TORCH_FREE = ("snapshot", "select_target", "filter", "verify", "analyze")


def imports_torch(path: Path) -> bool:
    """Does a file import torch or torchvision anywhere (top level or inside functions)?"""
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        if any(n.split(".")[0] in ("torch", "torchvision") for n in names):
            return True
    return False


@pytest.mark.parametrize("stage", TORCH_FREE)
def test_tensor_reading_stages_never_import_torch(stage):
    script = ROOT / f"stages/{stage}.py"
    assert [p for p in [script, *(ROOT / m for m in sorted(closure(script)))] if imports_torch(p)] == []


def params_sections_read(script: Path) -> set[str]:
    """Top-level params sections a stage script reads (`params.lora...`, `params.device`)."""
    return {node.attr for node in ast.walk(ast.parse(script.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "params"}


@pytest.mark.parametrize("stage", sorted(DVC["stages"]))
def test_stage_lists_exactly_the_params_it_reads(stage):
    listed = SPECS[stage].get("params", [])
    for key in listed:
        node = PARAMS
        for part in key.split("."):
            node = node[part]  # the key exists in params.yaml
    assert {key.split(".")[0] for key in listed} == params_sections_read(ROOT / f"stages/{stage}.py")


def _entries(spec: dict, kind: str) -> dict[str, dict]:
    """A stage's `outs`/`metrics`/`plots` as {path: options}."""
    return {next(iter(e)) if isinstance(e, dict) else e: (next(iter(e.values())) or {}) if isinstance(e, dict) else {}
            for e in spec.get(kind, [])}


@pytest.mark.parametrize("stage", sorted(DVC["stages"]))
def test_every_stage_can_use_the_run_cache(stage):
    """DVC skips the run cache for a stage with an uncached output that is neither a metric nor a plot."""
    spec = SPECS[stage]
    assert all(opts.get("cache", True) for opts in _entries(spec, "outs").values())
    assert not any(opts.get("persist") for kind in ("outs", "metrics", "plots") for opts in _entries(spec, kind).values())


def test_the_experiment_table_holds_only_the_headline_metrics():
    registered = {path for spec in SPECS.values() for path in _entries(spec, "metrics")}
    assert registered == {"metrics/summary/evaluate.json", "metrics/summary/finetune_full.json",
                          "metrics/summary/verify.json", "metrics/summary/zoo.json", "metrics/numerics.json"}
    assert "metrics" not in DVC  # no top-level list: each file has one home, its stage


def test_a_lora_change_alters_two_dependencies_only():
    """`dvc exp show` adds a hash column for every dependency that differs between experiments: everything later
    stages read from finetune comes through one directory, and from the zoo through another, so a rank sweep
    adds two columns."""
    lora_outs = {path for path in _entries(SPECS["finetune"], "outs")}
    assert {d for spec in SPECS.values() for d in spec["deps"] if d in lora_outs} == {"models/lora"}
    zoo_outs = {path for stage in ("zoo", "zoo_pair") for path in _entries(SPECS[stage], "outs")}
    assert all(path.startswith("models/zoo/") for path in zoo_outs if path.startswith("models/"))
    zoo_deps = {d for spec in SPECS.values() for d in spec["deps"] if d.startswith("models/zoo")}
    assert zoo_deps == {"models/zoo"}  # the directory as a whole, never one adapter


def test_each_plot_is_declared_once_with_a_title_or_as_an_image():
    plots = [(path, opts) for spec in SPECS.values() for path, opts in _entries(spec, "plots").items()]
    assert "plots" not in DVC  # a top-level definition would show the same file a second time
    for path, opts in plots:
        assert opts.get("cache") is False, path  # small, and committed so `dvc plots diff` works from git
        assert path.endswith(".png") or opts.get("title"), path
    assert len({p for p, _ in plots}) == len(plots)
