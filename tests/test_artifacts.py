"""Atomic writes, safetensors and digests, and verify's checks on tiny arrays."""

import json
import os

import numpy as np
import pytest

from lora_mnist.artifacts import (
    atomic_dir, atomic_path, check_shapes, digest, max_abs_diff, per_digit, read_json, read_safetensors,
    safetensors_bytes, tensor_digests, write_bytes, write_json,
)
from lora_mnist.cli import ArtifactError
from lora_mnist.verify import Proof, check_manifest, check_trainable


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


def test_same_tensors_names_tensor_and_max_diff():
    snap = snapshot_arrays()
    tensors = {k: v.copy() for k, v in snap.items()}
    proof = Proof()
    assert proof.same_tensors("ft", tensors, snap) == []
    assert proof.tensors_checked == 2 and proof.max_abs_diff == 0.0
    tensors["linear1.bias"][2] = -0.25
    failures = proof.same_tensors("ft", tensors, snap)
    assert failures == ["ft: tensor linear1.bias differs from the snapshot (max abs diff 0.25)"]
    assert proof.max_abs_diff == 0.25
    del tensors["linear1.bias"]
    tensors["linear2.bias"] = np.zeros(3, np.float32)
    assert Proof().same_tensors("ft", tensors, snap) == ["ft: tensor linear1.bias is missing",
                                                         "ft: unexpected tensor linear2.bias"]
    wide = {**snap, "linear1.bias": snap["linear1.bias"].astype(np.float64)}  # equal values, another dtype
    assert Proof().same_tensors("ft", wide, snap, "the reference") == [
        "ft: tensor linear1.bias is (3,) float64, the reference has (3,) float32"]


def test_same_digests_names_each_tensor_that_differs_is_missing_or_unexpected():
    expected = {"a": digest(np.zeros(2)), "b": digest(np.ones(2))}
    proof = Proof()
    assert proof.same_digests("rec", dict(expected), expected, "the snapshot") == []
    assert proof.tensors_checked == 2
    changed = {"a": expected["a"], "b": digest(np.ones(2) * 2), "c": expected["a"]}
    assert proof.same_digests("rec", changed, expected, "the snapshot") == [
        "rec: unexpected tensor c", "rec: tensor b differs from the snapshot (sha256)"]
    assert proof.same_digests("rec", {"a": expected["a"]}, expected, "x") == ["rec: tensor b is missing"]


def test_proof_records_each_check_and_reports_them():
    proof = Proof()
    proof.record("one", [])
    proof.record("two", ["two: broke"])
    metrics = proof.as_metrics()
    assert metrics["passed"] is False and metrics["checks"] == {"one": True, "two": False}
    assert metrics["failures"] == ["two: broke"]


def test_check_trainable_is_exactly_the_adapter_s_factors():
    factors = {"base_model.model.l.lora_A.weight": 0, "base_model.model.l.lora_B.weight": 0}
    lora = ["l.parametrizations.weight.0.lora_A", "l.parametrizations.weight.0.lora_B"]
    assert check_trainable("rec", lora, factors) == []
    assert check_trainable("rec", lora + ["l.bias"], factors) == ["rec: non-LoRA parameter l.bias was trainable"]
    assert check_trainable("rec", lora[:1], factors) == [
        "rec: LoRA factor base_model.model.l.lora_B.weight was not trainable"
    ]


def test_check_shapes_names_the_file_and_the_first_offending_tensor():
    expected = {"a": (2, 3), "b": (4,)}
    check_shapes({"b": (4,), "a": (2, 3)}, expected, "f")
    for actual, message in [({"a": (2, 3)}, "f: missing tensor 'b'"), ({**expected, "c": (1,)}, "f: unexpected tensor 'c'"),
                            ({"a": (3, 2), "b": (4,)}, r"f: tensor 'a' has shape \(3, 2\), expected \(2, 3\)")]:
        with pytest.raises(ArtifactError, match=message):
            check_shapes(actual, expected, "f")


def test_safetensors_bytes_are_stable_and_read_back_exactly(tmp_path):
    import torch

    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64)}
    metadata = {f"k{i}": str(i) for i in range(20)}  # many keys: safetensors writes them in hash order
    data = safetensors_bytes(arrays, metadata)
    assert data == safetensors_bytes(dict(reversed(arrays.items())), dict(reversed(metadata.items())))
    assert data == safetensors_bytes({k: torch.from_numpy(v) for k, v in arrays.items()}, metadata)  # torch: same
    write_bytes(tmp_path / "t.safetensors", data)
    tensors, meta = read_safetensors(tmp_path / "t.safetensors")
    assert meta == metadata and tensors.keys() == arrays.keys()
    assert all(np.array_equal(tensors[k], v) and tensors[k].dtype == v.dtype for k, v in arrays.items())
    assert tensor_digests(tmp_path / "t.safetensors") == {k: digest(v) for k, v in sorted(arrays.items())}
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00garbage")
    with pytest.raises(ArtifactError, match="bad.safetensors: not a readable safetensors file"):
        read_safetensors(tmp_path / "bad.safetensors")
    with pytest.raises(ArtifactError, match="none.safetensors: file not found"):
        read_safetensors(tmp_path / "none.safetensors")


def test_per_digit_keys_are_the_digits():
    assert per_digit(list(range(10, 20))) == {str(d): 10 + d for d in range(10)}


def test_leftovers_of_a_killed_write_are_removed_by_the_next(tmp_path):
    (tmp_path / ".tmp-out.bin-abc123").write_bytes(b"half")  # what SIGKILL mid-write leaves
    (tmp_path / ".tmp-plots-xyz").mkdir()
    (tmp_path / ".tmp-other.bin-1").write_bytes(b"not ours")
    with atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"new")
    with atomic_dir(tmp_path / "plots"):
        pass
    assert sorted(os.listdir(tmp_path)) == [".tmp-other.bin-1", "out.bin", "plots"]
