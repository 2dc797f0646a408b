"""dvc.yaml tells the truth: each stage depends on exactly the library modules its script imports."""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


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
    spec = DVC["stages"][stage]
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
    listed = DVC["stages"][stage].get("params", [])
    for key in listed:
        node = PARAMS
        for part in key.split("."):
            node = node[part]  # the key exists in params.yaml
    assert {key.split(".")[0] for key in listed} == params_sections_read(ROOT / f"stages/{stage}.py")


def test_metrics_and_plots_are_declared_outputs():
    outs = set()
    for spec in DVC["stages"].values():
        for out in spec.get("outs", []):
            outs.add(next(iter(out)) if isinstance(out, dict) else out)
    for metric in DVC["metrics"]:
        assert metric in outs
    for plot in DVC["plots"]:
        files = [plot] if isinstance(plot, str) else [
            f for spec in plot.values() for axis in ("x", "y") if isinstance(spec.get(axis), dict) for f in spec[axis]
        ]
        for f in files:
            assert any(f == o or f.startswith(o + "/") for o in outs), f
