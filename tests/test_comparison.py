"""Forgetting metrics from per-digit counts."""

import pytest

from lora_mnist.comparison import compare, forgetting, per_digit


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
    import json

    import pytest

    from lora_mnist.errors import ArtifactError
    from lora_mnist.comparison import per_digit, read_per_digit

    path = tmp_path / "m.json"
    path.write_text(json.dumps({"test": {"wrong": per_digit(list(range(10)))}}))
    assert read_per_digit(path, "test", "wrong") == list(range(10))
    path.write_text(json.dumps({"test": {"wrong": {**per_digit(list(range(10))), "3": 3.7}}}))
    with pytest.raises(ArtifactError, match=r"m.json: test.wrong.3 = 3.7 is not a count"):
        read_per_digit(path, "test", "wrong")
