"""report/metrics.py: the test-set comparison of models (forgetting from per-digit counts) and the headline files
`dvc exp show` tabulates, with verify's, which verify.verify writes itself."""

from __future__ import annotations

import json

import pytest
import torch

from synthetic import write_pretrained

from lora_mnist.artifacts import per_digit, read_per_digit, write_json
from lora_mnist.base.model import load_model
from lora_mnist.cli import ArtifactError
from lora_mnist.lora.adapter import save_adapter, training_record
from lora_mnist.lora.layer import apply_lora, freeze_non_lora
from lora_mnist.sweep import grid as sweep
from lora_mnist.report.metrics import compare, evaluate_headline, forgetting, full_headline, zoo_headline
from lora_mnist.verify import take_snapshot, verify


def test_forgetting_splits_target_and_others_and_names_the_most_hurt_digit():
    totals = [10] * 10
    base = [1, 0, 0, 2, 0, 0, 0, 1, 0, 5]
    lora = [1, 0, 0, 6, 0, 0, 0, 6, 0, 1]  # 3 and 7 both gain 4-5 errors; 7 gains most
    out = forgetting(totals, {"base": base, "lora": lora}, digit=9)
    assert out["target_accuracy"] == {"base": 0.5, "lora": 0.9}
    assert out["others_accuracy"]["base"] == pytest.approx(1 - 4 / 90)
    assert out["others_accuracy"]["lora"] == pytest.approx(1 - 13 / 90)
    assert out["lora"] == {"most_hurt_digit": 7, "most_hurt_extra_wrong": 5, "extra_wrong_others": 9}


def test_most_hurt_ties_go_to_the_smallest_digit():
    out = forgetting([5] * 10, {"base": [0] * 10, "lora": [0, 0, 2, 0, 2, 0, 0, 0, 0, 0]}, digit=0)
    assert out["lora"]["most_hurt_digit"] == 2


def test_per_digit_keys():
    assert per_digit([3, 1]) == {"0": 3, "1": 1}


def test_compare_builds_the_metrics_layout():
    out = compare([10] * 10, {"base": 0.9, "full": 0.5}, {"base": [1] * 10, "full": [0] * 9 + [5]}, digit=9)
    assert out["target"] == {"digit": 9, "wrong_base": 1, "wrong_full": 5}
    assert out["wrong"]["full"]["9"] == 5 and out["accuracy"]["full"] == 0.5
    assert out["forgetting"]["full"]["most_hurt_digit"] == 0  # no digit got worse: ties -> smallest


def test_forgetting_with_a_digit_absent_from_the_test_set():
    out = forgetting([0] + [5] * 9, {"base": [0] * 10, "lora": [0] * 10}, digit=0)
    assert out["target_accuracy"] == {"base": None, "lora": None}


def test_read_per_digit_accepts_counts_only(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"test": {"wrong": per_digit(list(range(10)))}}))
    assert read_per_digit(path, "test", "wrong") == list(range(10))
    path.write_text(json.dumps({"test": {"wrong": {**per_digit(list(range(10))), "3": 3.7}}}))
    with pytest.raises(ArtifactError, match=r"m.json: test.wrong.3 = 3.7 is not a count"):
        read_per_digit(path, "test", "wrong")


def _verify_headline(tmp_path, tamper: bool = False) -> tuple[dict, dict, str | Exception]:
    """Run verify on a tiny base with untrained adapters (LoRA, zoo digits 3 and 9, the pair); return the headline,
    the detailed metrics, and verify's summary line or the error it raised."""
    write_pretrained(tmp_path / "pretrained.safetensors", 6, 4)
    take_snapshot(tmp_path / "pretrained.safetensors", tmp_path / "snapshot.safetensors", tmp_path / "snapshot.json")
    write_json(tmp_path / "selection.json", {"target": {"digit": 9}})
    for folder, digits in (("lora", [9]), ("zoo/3", [3]), ("zoo/9", [9]), ("zoo/pair", [3, 9])):
        model = load_model(tmp_path / "pretrained.safetensors")
        apply_lora(model, ["linear1", "linear2", "linear3"], rank=1, alpha=1.0, generator=torch.Generator())
        freeze_non_lora(model)
        record = training_record(model, digits, 10, [1.0])
        if tamper and folder == "zoo/pair":
            record["base_sha256"]["linear2.bias"] = "0" * 64  # training left a moved base tensor
        save_adapter(model, tmp_path / folder, record)
    paths = {name: str(tmp_path / name) for name in ("snapshot.safetensors", "snapshot.json",
                                                     "pretrained.safetensors", "selection.json", "lora", "zoo")}
    try:
        outcome: str | Exception = verify((3, 9), (3, 9), *paths.values(), str(tmp_path / "verify.json"),
                                          str(tmp_path / "headline.json"))
    except ArtifactError as exc:
        outcome = exc
    return (json.loads((tmp_path / "headline.json").read_text()), json.loads((tmp_path / "verify.json").read_text()),
            outcome)


def test_verify_headline_says_whether_every_check_passed_over_how_many_tensors(tmp_path):
    headline, metrics, outcome = _verify_headline(tmp_path / "good")
    assert isinstance(outcome, str) and metrics["passed"] is True
    assert headline == {"verified": True, "tensors_verified": metrics["tensors_checked"]}
    # the base (6 tensors) vs the snapshot, and per adapter its 6 base tensors and 6 factors: 6 + 4 * 12
    assert metrics["tensors_checked"] == 54
    headline, metrics, outcome = _verify_headline(tmp_path / "bad", tamper=True)
    assert isinstance(outcome, ArtifactError) and "linear2.bias" in str(outcome)
    assert metrics["passed"] is False  # written on failure too: it names what failed
    assert headline == {"verified": False, "tensors_verified": metrics["tensors_checked"]}


def test_headline_keys_are_short_and_unique_across_files(tmp_path):
    evaluate = {"accuracy": {"base": 0.9, "lora": 0.8}, "target": {"digit": 9, "wrong_base": 100, "wrong_lora": 10},
                "forgetting": {"others_accuracy": {"base": 0.91, "lora": 0.7}}, "param_count": {"lora": 6794}}
    full = {"accuracy": {"full": 0.6}, "target": {"wrong_full": 0}, "forgetting": {"others_accuracy": {"full": 0.5}}}
    zoo = {"adapters": {"3": {"wrong_base": 9, "wrong_lora": 2}, "5": {"wrong_base": 4, "wrong_lora": 4}}}
    verified, metrics, _ = _verify_headline(tmp_path)
    files = [evaluate_headline(evaluate), full_headline(full), zoo_headline(zoo), verified]
    merged = {k: v for f in files for k, v in f.items()}
    assert len(merged) == sum(map(len, files))
    assert merged == {"acc_base": 0.9, "acc_lora": 0.8, "target": 9, "wrong_base": 100, "wrong_lora": 10,
                      "others_base": 0.91, "others_lora": 0.7, "lora_params": 6794, "acc_full": 0.6, "wrong_full": 0,
                      "others_full": 0.5, "zoo_adapters": 2, "zoo_improved": 1, "zoo_wrong": 6,
                      "verified": True, "tensors_verified": metrics["tensors_checked"]}
    assert max(map(len, merged)) <= 16  # the table at 160 columns has room for them
    # the sweep reads its columns from these headlines
    assert {f"{prefix}_{method}" for prefix in sweep.METRICS.values() for method in ("base", "lora", "full")} <= set(merged)
