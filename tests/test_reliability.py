"""Bad params, absent devices and unsafe loading: one clear message, no traceback, nothing written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lora_mnist.errors import ConfigError
from lora_mnist.runtime import resolve_device

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
SPECS = {name: spec.get("do", spec) for name, spec in DVC["stages"].items()}  # foreach: the `do` template
# stage -> number of arguments it takes (the paths need not exist: params are checked first)
PARAM_STAGES = {name: len(spec["cmd"].split()) - 3 for name, spec in SPECS.items() if spec.get("params")}


def run_stage(stage: str, cwd: Path) -> subprocess.CompletedProcess:
    args = [str(cwd / f"out{i}") for i in range(PARAM_STAGES[stage])]
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("stage", sorted(PARAM_STAGES))
def test_every_param_reading_stage_refuses_bad_params_before_any_work(stage, tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["lora"]["rnak"] = 4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage(stage, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: params: unknown key lora.rnak (did you mean lora.rank?); allowed: rank, alpha, targets, init, scaling, impl"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no output touched


def test_stage_error_on_missing_data_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    proc = run_stage("pretrain", tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.fullmatch(r"error: .*train-images-idx3-ubyte.*\n", proc.stderr)
    proc = run_stage("select_target", tmp_path)  # its input is pretrain's metrics file
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr == f"error: {tmp_path / 'out0'}: file not found\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_absent_cuda_is_an_error_not_a_silent_cpu_fallback():
    with pytest.raises(ConfigError, match="device = 'cuda' but no CUDA device is available"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "mps")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="an MPS device is present")
def test_absent_mps_is_an_error():
    with pytest.raises(ConfigError, match="device = 'mps' but no MPS device is available"):
        resolve_device("mps")


def test_no_code_path_unpickles_artifacts():
    """Weights are safetensors only; the one pickle (registry MNIST) goes through the restricted unpickler."""
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "stages").glob("*.py")]:
        text = path.read_text()
        assert "torch.load(" not in text, path
        assert not re.search(r"pickle\.loads?\(|np\.load\(|allow_pickle=True", text), path
        if "import pickle" in text:
            assert path.name == "download.py" and "_ArrayUnpickler(" in text, path


@pytest.mark.parametrize("stage", sorted(set(DVC["stages"]) - {"numerics"}))  # numerics: standard library only
def test_a_python_without_the_dependencies_gets_one_line_naming_the_fix(stage, tmp_path):
    """What `dvc` run outside the venv does: `python -S` leaves site-packages (yaml, numpy, torch) off the path."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    n_args = len(SPECS[stage]["cmd"].split()) - 3
    proc = subprocess.run([sys.executable, "-S", str(ROOT / "stages" / f"{stage}.py"),
                           *(str(tmp_path / f"out{i}") for i in range(n_args))],
                          cwd=tmp_path, env={"PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert re.fullmatch(r"error: \S+ has no module '\w+': run dvc from the project's environment "
                        r"\(`source \.venv/bin/activate`, or `make repro` to create it\)\n", proc.stderr), proc.stderr
