"""dvc.yaml tells the truth: each stage depends on the library code its script imports, lists exactly the params it
reads, and can be restored from DVC's run cache."""

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "dvc.yaml").read_text())
VARS = {k: v for entry in RAW["vars"] for k, v in entry.items()}
# dvc.yaml with its ${vars} filled in, as DVC reads it
DVC = yaml.safe_load(re.sub(r"\$\{(\w+)\}", lambda m: str(VARS[m.group(1)]), (ROOT / "dvc.yaml").read_text()))
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
STAGES = DVC["stages"]


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules a file imports: anywhere, or only in statements that run at import time (not inside functions)."""
    tree = ast.parse(path.read_text())
    def runs_on_import(stmt: ast.stmt) -> bool:  # not a def, nor `if TYPE_CHECKING:` (for annotations only)
        return not isinstance(stmt, (ast.FunctionDef, ast.ClassDef)) and not (
            isinstance(stmt, ast.If) and getattr(stmt.test, "id", None) == "TYPE_CHECKING")

    nodes = ast.walk(tree) if not top_level_only else (n for s in tree.body if runs_on_import(s) for n in ast.walk(s))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def _module_file(name: str) -> Path | None:
    for rel in (name.replace(".", "/") + ".py", name.replace(".", "/") + "/__init__.py"):
        if (ROOT / "src" / rel).is_file():
            return ROOT / "src" / rel
    return None


def closure(script: Path, lazy: bool = False) -> set[Path]:
    """The library files a stage script loads: what its main imports and, from there, what each module imports at
    import time; with `lazy`, also what library functions import when called (an upper bound)."""
    todo, seen = [script], set()
    while todo:
        path = todo.pop()
        for name in _imports(path, top_level_only=not lazy and path != script):
            path = _module_file(name) if name.startswith("lora_mnist") else None
            if path and path not in seen and path.name != "__init__.py":
                seen.add(path)
                todo.append(path)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_the_code_it_imports_and_nothing_else(stage):
    spec = STAGES[stage]
    assert spec["cmd"].startswith(f"PYTHONPATH=src python stages/{stage}.py ")
    assert f"stages/{stage}.py" in spec["deps"]
    listed = [ROOT / d for d in spec["deps"] if d.startswith("src/")]
    loaded, reachable = closure(ROOT / f"stages/{stage}.py"), closure(ROOT / f"stages/{stage}.py", lazy=True)
    uncovered = [str(p.relative_to(ROOT)) for p in loaded if not any(p == d or d in p.parents for d in listed)]
    assert uncovered == []  # editing any of these must re-run the stage
    unused = [str(d.relative_to(ROOT)) for d in listed if not any(p == d or d in p.parents for p in reachable)]
    assert unused == []


# Stages that only read and compare stored tensors or JSON: importing torch would cost each ~2 s.
TORCH_FREE = ("snapshot", "select_target", "verify", "numerics")


@pytest.mark.parametrize("stage", TORCH_FREE)
def test_tensor_reading_stages_never_import_torch(stage):
    script = ROOT / f"stages/{stage}.py"
    importers = [str(p.relative_to(ROOT)) for p in closure(script)
                 if any(m.split(".")[0] in ("torch", "torchvision") for m in _imports(p, top_level_only=True))]
    assert importers == []  # library functions that import torch when called are never called by these stages


def params_read(script: Path) -> set[str]:
    """The params a stage script passes on: `params.device`, `params.target.select_on`, ..."""
    return set(re.findall(r"\bparams\.([a-z_]+(?:\.[a-z_]+)?)", script.read_text()))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_lists_exactly_the_params_it_reads(stage):
    listed = STAGES[stage].get("params", [])
    for key in listed:
        node = PARAMS
        for part in key.split("."):
            node = node[part]  # the key exists in params.yaml
    assert set(listed) == params_read(ROOT / f"stages/{stage}.py")


def _entries(spec: dict, kind: str) -> dict[str, dict]:
    """A stage's `outs`/`metrics`/`plots` as {path: options}."""
    return {next(iter(e)) if isinstance(e, dict) else e: (next(iter(e.values())) or {}) if isinstance(e, dict) else {}
            for e in spec.get(kind, [])}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_can_use_the_run_cache(stage):
    """DVC skips the run cache for a stage with an uncached output that is neither a metric nor a plot."""
    spec = STAGES[stage]
    assert all(opts.get("cache", True) for opts in _entries(spec, "outs").values())
    assert not any(opts.get("persist") for kind in ("outs", "metrics", "plots") for opts in _entries(spec, kind).values())


def test_the_experiment_table_holds_only_the_headline_metrics():
    registered = {path for spec in STAGES.values() for path in _entries(spec, "metrics")}
    assert registered == {*(f"metrics/summary/{s}.json" for s in ("evaluate", "finetune_full", "verify", "zoo")),
                          "metrics/numerics.json"}
    assert "metrics" not in DVC  # no top-level list: each file has one home, its stage


def test_a_lora_experiment_adds_one_hash_column():
    """`dvc exp show` adds a column for every dependency that differs between experiments: what later stages read
    from finetune comes through one directory, the adapter; the zoo's through another."""
    lora_outs = set(_entries(STAGES["finetune"], "outs"))
    assert {d for spec in STAGES.values() for d in spec["deps"] if d in lora_outs} == {"models/lora"}
    assert {d for spec in STAGES.values() for d in spec["deps"] if d.startswith("models/zoo")} == {"models/zoo"}


def test_each_plot_is_declared_once():
    stage_plots = [(path, opts) for spec in STAGES.values() for path, opts in _entries(spec, "plots").items()]
    for path, opts in stage_plots:
        assert opts.get("cache") is False, path  # small, and committed so `dvc plots diff` works from git
        assert path.endswith(".png") or opts.get("title"), path
    # the top-level plot draws files that no stage declares as a plot (the spectra: cached outs of finetune_full)
    top = [f for entry in DVC["plots"] for spec in entry.values() for f in spec["y"]]
    cached = {p for spec in STAGES.values() for p in _entries(spec, "outs")}
    assert set(top) <= cached and not set(top) & {p for p, _ in stage_plots}
    assert len({p for p, _ in stage_plots}) == len(stage_plots)


def test_artifacts_name_stage_outputs():
    outs = {p for spec in STAGES.values() for p in _entries(spec, "outs")}
    for name, artifact in DVC["artifacts"].items():
        assert artifact["path"] in outs and artifact["type"] == "model" and artifact["desc"], name
