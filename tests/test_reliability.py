"""Bad params, absent devices and unsafe loading: one clear message, no traceback, nothing written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lora_mnist.cli import ConfigError
from lora_mnist.config import parse_params
from lora_mnist.numerics import resolve_device

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
SPECS = {name: spec.get("do", spec) for name, spec in DVC["stages"].items()}  # foreach: the `do` template


def stage_args(stage: str) -> list[str]:
    """The arguments dvc.yaml's cmd passes to stages/<stage>.py (as written there, before ${} interpolation)."""
    words = SPECS[stage]["cmd"].split()
    script = next(i for i, word in enumerate(words) if word.endswith(f"/{stage}.py"))
    return words[script + 1 :]


# stages that read params.yaml (the paths they get need not exist: params are checked first)
PARAM_STAGES = sorted(name for name, spec in SPECS.items() if spec.get("params"))


def run_stage(stage: str, cwd: Path, *python_flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    args = [str(cwd / f"out{i}") for i in range(len(stage_args(stage)))]
    return subprocess.run([sys.executable, *python_flags, str(ROOT / "stages" / f"{stage}.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_every_stage_in_dvc_yaml_gets_arguments():
    assert set(SPECS) == {p.stem for p in (ROOT / "stages").glob("*.py")}
    assert all(stage_args(stage) for stage in SPECS)


@pytest.mark.parametrize("stage", PARAM_STAGES)
def test_every_param_reading_stage_refuses_bad_params_before_any_work(stage, tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["lora"]["rnak"] = 4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError) as expected:
        parse_params(params)
    assert "unknown key lora.rnak (did you mean lora.rank?)" in str(expected.value)
    proc = run_stage(stage, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == f"error: {expected.value}\n"  # the error load_params raises, as one line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no output touched


def test_stage_error_on_missing_data_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    proc = run_stage("pretrain", tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.fullmatch(r"error: .*train-images-idx3-ubyte.*\n", proc.stderr)
    proc = run_stage("select_target", tmp_path)  # it reads pretrain's metrics file first
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    metrics = tmp_path / f"out{stage_args('select_target').index('metrics/pretrain.json')}"
    assert proc.stderr == f"error: {metrics}: file not found\n"


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


@pytest.mark.parametrize("stage", sorted(SPECS))
def test_a_python_without_the_dependencies_gets_one_line_naming_the_fix(stage, tmp_path):
    """What `dvc` run outside the venv does: `python -S` leaves site-packages (yaml, numpy, torch) off the path."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    if stage == "numerics":  # it reads the other stages' records: give it one, so only a missing module can stop it
        (tmp_path / "out0").mkdir()
        (tmp_path / "out0" / "pretrain.json").write_text("{}")
    proc = run_stage(stage, tmp_path, "-S", env={"PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 1
    assert re.fullmatch(r"error: \S+ has no module '\w+': run dvc from the project's environment "
                        r"\(`source \.venv/bin/activate`, or `make repro` to create it\)\n", proc.stderr), proc.stderr
