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
    script = spec["cmd"].split()[1]
    assert script == f"stages/{stage}.py"
    listed = {d for d in spec["deps"] if d.startswith("src/")}
    assert script in spec["deps"]
    assert listed == closure(ROOT / script)


@pytest.mark.parametrize("stage", sorted(DVC["stages"]))
def test_stage_params_exist(stage):
    for key in DVC["stages"][stage].get("params", []):
        node = PARAMS
        for part in key.split("."):
            node = node[part]


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
