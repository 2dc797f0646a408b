"""base/select_target.py: the target digit (auto or fixed), its training images, and the stage that writes both,
holding out the validation images in `validation` mode. numpy only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file
from synthetic import write_mnist

from lora_mnist.artifacts import per_digit
from lora_mnist.base.data import read_mnist_split
from lora_mnist.base.select_target import check_enough, choose_target, target_indices, validation_size
from lora_mnist.cli import DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "wrong,digit,expected",
    [
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "auto", 9),
        ([5, 1, 5, 0, 0, 0, 0, 0, 0, 5], "auto", 0),  # three-way tie -> smallest digit
        ([0, 0, 0, 7, 0, 0, 0, 7, 0, 0], "auto", 3),
        ([0] * 10, "auto", 0),
        ([9, 0, 0, 0, 0, 0, 0, 0, 0, 0], 4, 4),  # a fixed digit overrides the errors
    ],
)
def test_choose_target(wrong, digit, expected):
    assert choose_target(wrong, digit) == expected


def test_target_indices_are_exactly_the_digit_in_order():
    labels = np.array([3, 9, 1, 9, 9, 0], dtype=np.uint8)
    idx = target_indices(labels, 9)
    assert idx.tolist() == [1, 3, 4] and idx.dtype == np.int64
    with pytest.raises(DataError, match="digit 7 has no training samples"):
        target_indices(labels, 7)


def test_check_enough_names_digit_batch_and_the_knob_that_chose_them():
    check_enough(10, 9, 10, "target.digit")
    with pytest.raises(DataError, match=r"digit 9 has 3 training samples, fewer than one batch of 10; "
                                        r"choose another target\.digit or a smaller batch size"):
        check_enough(3, 9, 10, "target.digit")
    check_enough(4, [3, 9], 4, "zoo.digits")
    with pytest.raises(DataError, match=r"digit \[3, 9\] has 3 training samples, fewer than one batch of 4; "
                                        r"choose another zoo\.digits"):
        check_enough(3, [3, 9], 4, "zoo.digits")


def _run_select_target(tmp_path: Path, mode: str, digit, metrics: dict) -> dict[str, Path]:
    """Run stages/select_target.py (in a fresh process, with params.yaml in its cwd); return its output paths."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["target"] = {"digit": digit, "select_on": mode}
    work = tmp_path / mode
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    (work / "pretrain.json").write_text(json.dumps(metrics))
    out = {name: work / name for name in ("selection.json", "indices.safetensors", "filter.json")}
    # run_path in a clean interpreter: the stage must not need torch (checked after it ran)
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
            "assert 'torch' not in sys.modules, 'select_target imported torch'")
    subprocess.run([sys.executable, "-c", code, str(ROOT / "stages/select_target.py"), str(tmp_path / "data"),
                    str(work / "pretrain.json"), *map(str, out.values())],
                   cwd=work, check=True, capture_output=True, env={"PYTHONPATH": str(ROOT / "src")}, timeout=60)
    return out


def test_validation_mode_holds_out_the_last_sixth_disjoint_from_pretraining_and_fine_tuning(tmp_path):
    """Pretraining (first 5/6), validation (last 1/6) and test are disjoint; the fine-tuning pool is pretraining's;
    `auto` chooses on the split select_on names, while the test results travel on for the later stages."""
    assert validation_size(60_000, "validation") == 10_000 and validation_size(60_000, "test") == 0
    write_mnist(tmp_path / "data" / "MNIST" / "raw", n_train=600, n_test=100, gz=False)
    _, labels = read_mnist_split(tmp_path / "data" / "MNIST" / "raw", "train")
    test_wrong, validation_wrong = [0] * 7 + [5, 0, 0], [0] * 3 + [4] + [0] * 6  # 7 worst on test, 3 on validation
    test = {"accuracy": 0.75, "wrong": per_digit(test_wrong)}
    for mode, pool, expected in (("validation", 500, 3), ("test", 600, 7)):
        metrics = {"test": test, **({"validation": {"accuracy": 0.5, "wrong": per_digit(validation_wrong)}}
                                    if mode == "validation" else {})}
        out = _run_select_target(tmp_path, mode, "auto", metrics)
        selection = json.loads(out["selection.json"].read_text())
        assert selection["target"]["digit"] == expected and selection["target"]["chosen_on"] == mode
        assert selection["target"]["mode"] == "auto"
        assert selection["chosen_on_wrong"] == per_digit(validation_wrong if mode == "validation" else test_wrong)
        assert selection["accuracy"] == 0.75 and selection["wrong"] == per_digit(test_wrong)  # the base's test results
        tensors = load_file(out["indices.safetensors"])
        assert tensors["indices"].tolist() == np.flatnonzero(labels[:pool] == expected).tolist()
        rows = set(tensors["indices"].tolist()) | set(tensors["others"].tolist())
        assert rows == set(range(pool))  # validation mode: nothing from rows 500..599, which chose the target
        written = json.loads(out["filter.json"].read_text())
        assert written["pool"] == pool and written["digit"] == expected
        assert (written["size"], written["others"]) == (len(tensors["indices"]), len(tensors["others"]))


def test_a_fixed_digit_ignores_the_counts(tmp_path):
    write_mnist(tmp_path / "data" / "MNIST" / "raw", n_train=60, n_test=20, gz=False)
    wrong = per_digit([0] * 9 + [8])
    out = _run_select_target(tmp_path, "test", 4, {"test": {"accuracy": 0.9, "wrong": wrong}})
    target = json.loads(out["selection.json"].read_text())["target"]
    assert target == {"digit": 4, "mode": "fixed", "chosen_on": "test", "wrong": 0}
