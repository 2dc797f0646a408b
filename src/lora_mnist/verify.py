"""The proof that LoRA never moved an original weight: a snapshot of the pretrained weights with a manifest of
per-tensor sha256 (stage `snapshot`), then exact checks of every adapter against it (stage `verify`), each failure
naming the file and tensor. numpy only: files are read, never run, so neither stage pays torch's import.

Fine-tuning records, in each adapter's training.json, the digests of the base tensors as training left them in
memory and of the factors it ended with; verify compares those with the snapshot and with the saved adapter.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lora_mnist.artifacts import (atomic_path, check_shapes, digest, json_field, max_abs_diff, read_safetensors,
                                  tensor_digests, write_json)
from lora_mnist.cli import ArtifactError
from lora_mnist.lora.peft_format import ADAPTER_WEIGHTS, LORA_MARK, RECORD, adapter_shapes, load_settings, peft_name


def take_snapshot(model: str | Path, snapshot_out: str | Path, manifest_out: str | Path) -> str:
    """The stage `snapshot`: a byte copy of the pretrained model and the sha256 of each of its tensors."""
    with atomic_path(snapshot_out) as tmp:
        shutil.copyfile(model, tmp)
    digests = tensor_digests(snapshot_out)
    write_json(manifest_out, {"algorithm": "sha256", "tensors": digests})
    return f"snapshot: {len(digests)} tensors of {model} -> {snapshot_out}, manifest {manifest_out}"


def read_manifest(path: str | Path) -> dict[str, str]:
    """{tensor name: sha256} of a manifest written by take_snapshot."""
    tensors = json_field(path, "tensors")
    if not isinstance(tensors, dict) or not all(isinstance(v, str) for v in tensors.values()):
        raise ArtifactError(f"{path}: tensors must map tensor names to sha256 strings")
    return tensors


@dataclass
class Proof:
    """Outcome of all checks; `failures` name the tensor or check and the size of the difference."""

    tensors_checked: int = 0
    max_abs_diff: float = 0.0
    checks: dict[str, bool] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def record(self, check: str, failures: list[str]) -> None:
        self.checks[check] = not failures
        self.failures += failures

    def same_tensors(self, label: str | Path, tensors: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                     name: str = "the snapshot") -> list[str]:
        """`tensors` hold exactly the tensors of `reference` (same names, shapes, dtypes, bits); failure lines."""
        failures = _names_differ(label, tensors, reference)
        for key in sorted(set(tensors) & set(reference)):
            self.tensors_checked += 1
            actual, expected = tensors[key], reference[key]
            diff = max_abs_diff(actual, expected)
            if diff != float("inf"):
                self.max_abs_diff = max(self.max_abs_diff, diff)
            if actual.shape != expected.shape or actual.dtype != expected.dtype:
                failures.append(f"{label}: tensor {key} is {actual.shape} {actual.dtype}, {name} has "
                                f"{expected.shape} {expected.dtype}")
            elif not np.array_equal(actual, expected):
                failures.append(f"{label}: tensor {key} differs from {name} (max abs diff {diff:.6g})")
        return failures

    def same_digests(self, label: str | Path, actual: dict[str, str], expected: dict[str, str], name: str) -> list[str]:
        """Two {tensor: sha256} maps name the same tensors with the same digests; failure lines."""
        self.tensors_checked += len(actual)
        return _names_differ(label, actual, expected) + [f"{label}: tensor {k} differs from {name} (sha256)"
                                                         for k in sorted(set(actual) & set(expected))
                                                         if actual[k] != expected[k]]

    def as_metrics(self) -> dict:
        return {"passed": not self.failures, "tensors_checked": self.tensors_checked,
                "max_abs_diff": self.max_abs_diff, "checks": self.checks, "failures": self.failures}


def _names_differ(label: str | Path, actual: dict, expected: dict) -> list[str]:
    """A failure line per tensor name in `expected` but not `actual`, and the other way round."""
    return ([f"{label}: tensor {k} is missing" for k in sorted(expected) if k not in actual]
            + [f"{label}: unexpected tensor {k}" for k in sorted(actual) if k not in expected])


def check_manifest(snapshot: dict[str, np.ndarray], manifest: dict[str, str], source: str | Path) -> list[str]:
    """Every snapshot tensor still has the sha256 recorded when the snapshot was taken."""
    failures = [f"{source}: tensor {k} is in the manifest but not in the snapshot"
                for k in sorted(manifest) if k not in snapshot]
    for name, array in sorted(snapshot.items()):
        if name not in manifest:
            failures.append(f"{source}: tensor {name} is not in the manifest")
        elif digest(array) != manifest[name]:
            failures.append(f"{source}: tensor {name} does not match its manifest sha256 (snapshot was modified)")
    return failures


def check_trainable(label: str | Path, trainable: list[str], factors: dict[str, np.ndarray]) -> list[str]:
    """The parameters that were trainable are exactly the adapter's LoRA factors."""
    extra = sorted(k for k in trainable if LORA_MARK not in k)
    failures = [f"{label}: non-LoRA parameter {k} was trainable" for k in extra]
    named = {peft_name(k) for k in trainable if LORA_MARK in k}
    failures += [f"{label}: LoRA factor {k} was not trainable" for k in sorted(set(factors) - named)]
    return failures


def check_adapter(proof: Proof, adapter_dir: Path, digits: list[int], manifest: dict[str, str],
                  layers: dict[str, tuple[int, int]]) -> dict[str, list[str]]:
    """One adapter's checks, by name: its record says it was trained on `digits` and that training left the base
    tensors as the manifest has them; its saved factors are those training ended with; only they were trainable;
    its config fits them and the model's `layers` (name -> (in, out)). A missing or unreadable file fails too."""
    record_path, weights = adapter_dir / RECORD, adapter_dir / ADAPTER_WEIGHTS
    out: dict[str, list[str]] = {"base_untouched": [], "adapter_is_trained": [], "trainable_is_lora": [],
                                 "adapter_consistent": []}
    try:
        trained_on = json_field(record_path, "digits")
        if trained_on != digits:
            out["adapter_consistent"].append(f"{record_path}: trained on digits {trained_on}, expected {digits}")
        out["base_untouched"] = proof.same_digests(record_path, json_field(record_path, "base_sha256"), manifest,
                                                   "the snapshot")
        factors, _ = read_safetensors(weights)
        out["adapter_is_trained"] = proof.same_digests(weights, {k: digest(v) for k, v in factors.items()},
                                                       json_field(record_path, "adapter_sha256"), "the trained factors")
        out["trainable_is_lora"] = check_trainable(record_path, json_field(record_path, "trainable"), factors)
        check_shapes({k: v.shape for k, v in factors.items()}, adapter_shapes(load_settings(adapter_dir), layers,
                                                                             adapter_dir), weights)
    except ArtifactError as exc:
        out["adapter_consistent"].append(str(exc))
    return out


def prove(snapshot_path: str | Path, manifest_path: str | Path, pretrained_path: str | Path,
          adapters: dict[Path, list[int]]) -> Proof:
    """Every check, by name: the snapshot matches its manifest; the pretrained model equals the snapshot; and for
    every adapter (folder -> the digits it must be trained on), the checks of check_adapter."""
    proof = Proof()
    snapshot, _ = read_safetensors(snapshot_path)
    manifest = read_manifest(manifest_path)
    proof.record("snapshot_manifest", check_manifest(snapshot, manifest, snapshot_path))
    pretrained, _ = read_safetensors(pretrained_path)
    proof.record("pretrained_equals_snapshot", proof.same_tensors(pretrained_path, pretrained, snapshot))
    layers = {k[: -len(".weight")]: v.shape[::-1] for k, v in snapshot.items() if k.endswith(".weight")}  # (in, out)
    checks: dict[str, list[str]] = {}
    for adapter_dir, digits in adapters.items():
        for check, failures in check_adapter(proof, Path(adapter_dir), digits, manifest, layers).items():
            checks.setdefault(check, []).extend(failures)
    for check, failures in checks.items():
        proof.record(check, failures)
    return proof


def verify(zoo_digits: tuple[int, ...], zoo_compose: tuple[int, ...], snapshot: str, manifest: str, pretrained: str,
           selection: str, lora_dir: str, zoo_dir: str, metrics_out: str, headline_out: str) -> str:
    """The stage: prove it for the LoRA adapter (trained on the selected target digit) and every zoo adapter; write
    the checks (on failure too: they name what failed) and the headline; a failure is an ArtifactError."""
    adapters = {Path(lora_dir): [json_field(selection, "target", "digit")]}
    adapters |= {Path(zoo_dir) / str(d): [d] for d in zoo_digits} | {Path(zoo_dir) / "pair": list(zoo_compose)}
    proof = prove(snapshot, manifest, pretrained, adapters)
    write_json(metrics_out, proof.as_metrics())
    write_json(headline_out, {"verified": not proof.failures, "tensors_verified": proof.tensors_checked})
    if proof.failures:
        raise ArtifactError("verify failed:\n  " + "\n  ".join(proof.failures))
    return (f"verify: passed, {proof.tensors_checked} tensors equal bit for bit (the pretrained model to the snapshot, "
            f"{len(adapters)} adapters' base to its manifest and their files to what training recorded)")
