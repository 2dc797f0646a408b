"""Atomic writes, digests and the verify checks on tiny arrays."""

import json
import os

import numpy as np
import pytest

from lora_mnist.artifacts import atomic_dir, atomic_path, read_json, write_json
from lora_mnist.errors import ArtifactError
from lora_mnist.integrity import digest, max_abs_diff
from lora_mnist.proof import (
    Proof, adapter_factors, check_adapter_config, check_manifest, check_same, check_trainable, finetuned_base,
)


def test_atomic_path_replaces_on_success_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]


def test_atomic_dir_replaces_whole_directory(tmp_path):
    target = tmp_path / "plots"
    target.mkdir()
    (target / "stale.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.json").write_text("{")
            raise RuntimeError
    assert os.listdir(target) == ["stale.json"] and os.listdir(tmp_path) == ["plots"]
    with atomic_dir(target) as tmp:
        (tmp / "new.json").write_text("{}")
    assert os.listdir(target) == ["new.json"] and os.listdir(tmp_path) == ["plots"]
    assert oct(target.stat().st_mode & 0o777) == "0o755"


def test_write_json_is_stable(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": {"y": 0.1, "x": 2}})
    assert (tmp_path / "a.json").read_text() == json.dumps({"a": {"x": 2, "y": 0.1}, "b": 1}, indent=2) + "\n"
    assert read_json(tmp_path / "a.json")["b"] == 1
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ArtifactError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(ArtifactError, match="missing.json: file not found"):
        read_json(tmp_path / "missing.json")


def test_digest_sees_value_shape_and_dtype():
    a = np.arange(6, dtype=np.float32)
    assert digest(a) == digest(a.copy())
    assert digest(a) != digest(a.reshape(2, 3))
    assert digest(a) != digest(a.astype(np.float64))
    b = a.copy()
    b[3] = np.nextafter(b[3], 10, dtype=np.float32)  # one ulp
    assert digest(a) != digest(b)
    assert max_abs_diff(a, b) > 0 and max_abs_diff(a, a) == 0 and max_abs_diff(a, a[:2]) == float("inf")


def snapshot_arrays():
    return {"linear1.weight": np.ones((3, 4), np.float32), "linear1.bias": np.zeros(3, np.float32)}


def test_manifest_check_names_modified_tensor():
    snap = snapshot_arrays()
    manifest = {k: digest(v) for k, v in snap.items()}
    assert check_manifest(snap, manifest, "snap") == []
    snap["linear1.bias"][1] = 0.5
    assert check_manifest(snap, manifest, "snap") == [
        "snap: tensor linear1.bias does not match its manifest sha256 (snapshot was modified)"
    ]


def test_check_same_names_tensor_and_max_diff():
    snap = snapshot_arrays()
    finetuned = {
        "linear1.parametrizations.weight.original": np.ones((3, 4), np.float32),
        "linear1.parametrizations.weight.0.lora_A": np.ones((1, 4), np.float32),
        "linear1.bias": np.zeros(3, np.float32),
    }
    report = Proof()
    assert check_same(report, "ft", finetuned_base(finetuned), snap) == []
    assert report.tensors_checked == 2 and report.max_abs_diff == 0.0
    finetuned["linear1.bias"][2] = -0.25
    failures = check_same(report, "ft", finetuned_base(finetuned), snap)
    assert failures == ["ft: tensor linear1.bias differs from the snapshot (max abs diff 0.25)"]
    assert report.max_abs_diff == 0.25
    del finetuned["linear1.bias"]
    assert check_same(Proof(), "ft", finetuned_base(finetuned), snap) == ["ft: tensor linear1.bias is missing"]


def test_check_trainable_is_exactly_lora():
    state = {"l.parametrizations.weight.0.lora_A": 0, "l.parametrizations.weight.0.lora_B": 0, "l.bias": 0}
    lora = ["l.parametrizations.weight.0.lora_A", "l.parametrizations.weight.0.lora_B"]
    assert check_trainable(lora, state) == []
    assert check_trainable(lora + ["l.bias"], state) == ["trainable: non-LoRA parameter l.bias was trainable"]
    assert check_trainable(lora[:1], state) == [
        "trainable: LoRA parameter l.parametrizations.weight.0.lora_B was not trainable"
    ]


def test_check_adapter_maps_peft_keys_to_the_fine_tuned_factors():
    a, b = np.ones((1, 4), np.float32), np.zeros((3, 1), np.float32)
    finetuned = {"linear1.parametrizations.weight.0.lora_A": a, "linear1.parametrizations.weight.0.lora_B": b,
                 "linear1.parametrizations.weight.original": np.ones((3, 4), np.float32), "linear1.bias": b[:, 0]}
    adapter = {"base_model.model.linear1.lora_A.weight": a.copy(), "base_model.model.linear1.lora_B.weight": b.copy()}

    def check_adapter(adapter, finetuned, source):
        return check_same(Proof(), source, adapter, adapter_factors(finetuned), "the fine-tuned model's")

    assert check_adapter(adapter, finetuned, "ad") == []
    assert check_adapter({**adapter, "base_model.model.linear1.lora_B.weight": b.astype(np.float64)}, finetuned,
                         "ad") == ["ad: tensor base_model.model.linear1.lora_B.weight is (3, 1) float64, "
                                   "the fine-tuned model's has (3, 1) float32"]
    adapter["base_model.model.linear1.lora_A.weight"] = a * 2
    assert check_adapter(adapter, finetuned, "ad") == [
        "ad: tensor base_model.model.linear1.lora_A.weight differs from the fine-tuned model's (max abs diff 1)"]
    del adapter["base_model.model.linear1.lora_A.weight"]
    adapter["base_model.model.linear2.lora_A.weight"] = a
    assert check_adapter(adapter, finetuned, "ad") == [
        "ad: tensor base_model.model.linear1.lora_A.weight is missing",
        "ad: unexpected tensor base_model.model.linear2.lora_A.weight"]
    settings = {"targets": ["linear1"], "rank": 1}
    assert check_adapter_config(settings, finetuned, "cfg") == []
    assert check_adapter_config({"targets": ["linear1", "linear2"], "rank": 2}, finetuned, "cfg") == [
        "cfg: target_modules ['linear1', 'linear2'], the fine-tuned model has LoRA on ['linear1']",
        "cfg: r = 2, the fine-tuned model's factors have rank [1]"]


def test_leftovers_of_a_killed_write_are_removed_by_the_next(tmp_path):
    (tmp_path / ".tmp-out.bin-abc123").write_bytes(b"half")  # what SIGKILL mid-write leaves
    (tmp_path / ".tmp-plots-xyz").mkdir()
    (tmp_path / ".tmp-other.bin-1").write_bytes(b"not ours")
    with atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"new")
    with atomic_dir(tmp_path / "plots"):
        pass
    assert sorted(os.listdir(tmp_path)) == [".tmp-other.bin-1", "out.bin", "plots"]
