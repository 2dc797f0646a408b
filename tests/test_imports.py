"""The library's imports go one way: no module imports, at any depth and even inside a function, one that imports it
back (each concept has one home, and a lower module never reaches up)."""

import ast
import graphlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "lora_mnist"


def _name(path: Path) -> str:
    """Dotted module name of a file under src/ (a package is named by its __init__.py)."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def imported(name: str) -> set[str]:
    """The library modules that module `name` imports anywhere: at top level, inside functions, under
    TYPE_CHECKING, relative or absolute; `from a import b` counts as a.b where b is a module."""
    path, found = MODULES[name], set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported(name) for name in MODULES}


def test_the_import_graph_has_no_cycle():
    try:
        graphlib.TopologicalSorter(GRAPH).prepare()
        cycle = []
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
    assert cycle == [], " imports ".join(cycle)  # such as [a, b, a]: a imports b, which imports a


def test_the_graph_sees_imports_at_every_depth():
    """The parser finds what it must (so an empty graph cannot pass as acyclic): top-level imports and ones inside
    functions."""
    assert len(MODULES) > 20
    assert {"lora_mnist.lora.peft_format", "lora_mnist.base.model"} <= GRAPH["lora_mnist.lora.layer"]
    assert {"lora_mnist.verify", "lora_mnist.lora.adapter", "lora_mnist.lora.layer"} <= GRAPH["lora_mnist.export"]
    assert "lora_mnist.artifacts" in GRAPH["lora_mnist.numerics"]  # only inside record()


def _reach(name: str) -> set[str]:
    """Every library module `name` may load, counting imports inside functions too."""
    seen, todo = set(), [name]
    while todo:
        for dep in GRAPH[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def _imports_torch(name: str) -> bool:
    """The module loads torch, when imported or from inside one of its functions."""
    nodes = list(ast.walk(ast.parse(MODULES[name].read_text())))
    names = [a.name for n in nodes if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in nodes if isinstance(n, ast.ImportFrom)]
    return any(m.split(".")[0] == "torch" for m in names)


@pytest.mark.parametrize("reader", ["lora_mnist.lora.peft_format", "lora_mnist.verify", "lora_mnist.report.analyze"])
def test_the_adapter_files_are_read_without_torch(reader):
    """verify and the reports read adapter files through lora/peft_format.py: nothing they may load, even from
    inside a function, loads torch (lora/adapter.py and lora/layer.py do; the export sits above them all)."""
    torch_side = {m for m in MODULES if _imports_torch(m)}
    assert {"lora_mnist.lora.adapter", "lora_mnist.lora.layer", "lora_mnist.export"} <= torch_side
    assert reader == "lora_mnist.lora.peft_format" or "lora_mnist.lora.peft_format" in GRAPH[reader]
    assert not _reach(reader) & torch_side
