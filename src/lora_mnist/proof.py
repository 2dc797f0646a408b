"""Proof that LoRA fine-tuning never moved an original weight: exact checks, each naming what failed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lora_mnist.artifacts import json_field
from lora_mnist.errors import ArtifactError
from lora_mnist.integrity import check_shapes, digest, max_abs_diff, read_safetensors
from lora_mnist.names import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, FINETUNED, LORA_MARK, ZOO_RECORD, lora_factor, peft_key,
                              plain_name)
from lora_mnist.peft_config import adapter_shapes, load_settings

# numpy only: these checks read tensors, they never run a model, so the stage does not pay torch's import.


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

    def compare(
        self, label: str, name: str, actual: np.ndarray, expected: np.ndarray, reference: str = "the snapshot"
    ) -> list[str]:
        """Exact comparison of one tensor (shape, dtype, bits) with `reference`; a failure line or nothing."""
        self.tensors_checked += 1
        diff = max_abs_diff(actual, expected)
        if diff != float("inf"):
            self.max_abs_diff = max(self.max_abs_diff, diff)
        if actual.shape != expected.shape or actual.dtype != expected.dtype:
            return [f"{label}: tensor {name} is {actual.shape} {actual.dtype}, {reference} has "
                    f"{expected.shape} {expected.dtype}"]
        if not np.array_equal(actual, expected):
            return [f"{label}: tensor {name} differs from {reference} (max abs diff {diff:.6g})"]
        return []

    def as_metrics(self) -> dict:
        return {"passed": not self.failures, "tensors_checked": self.tensors_checked,
                "max_abs_diff": self.max_abs_diff, "checks": self.checks, "failures": self.failures}


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


def _names_differ(label: str | Path, actual: dict, expected: dict) -> list[str]:
    """A failure line per tensor name in `expected` but not `actual`, and the other way round."""
    return ([f"{label}: tensor {k} is missing" for k in sorted(expected) if k not in actual]
            + [f"{label}: unexpected tensor {k}" for k in sorted(actual) if k not in expected])


def check_same(
    proof: Proof, label: str, tensors: dict[str, np.ndarray], snapshot: dict[str, np.ndarray],
    reference: str = "the snapshot",
) -> list[str]:
    """`tensors` hold exactly the tensors of `snapshot` (named as there), bit for bit."""
    failures = _names_differ(label, tensors, snapshot)
    for name in sorted(set(tensors) & set(snapshot)):
        failures += proof.compare(label, name, tensors[name], snapshot[name], reference)
    return failures


def finetuned_base(finetuned: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fine-tuned model's frozen tensors (weights AND biases) under plain names."""
    return {name: v for k, v in finetuned.items() if (name := plain_name(k)) is not None}


def check_trainable(recorded: list[str], finetuned: dict[str, np.ndarray]) -> list[str]:
    """The params that were trainable during fine-tuning are exactly the LoRA params."""
    lora = {k for k in finetuned if LORA_MARK in k}
    extra, missing = sorted(set(recorded) - lora), sorted(lora - set(recorded))
    failures = [f"trainable: non-LoRA parameter {k} was trainable" for k in extra]
    failures += [f"trainable: LoRA parameter {k} was not trainable" for k in missing]
    if not lora:
        failures.append("trainable: the fine-tuned model has no LoRA parameters")
    return failures


def recorded_trainable(metadata: dict[str, str], source: str | Path) -> list[str]:
    """The trainable parameter names the finetune stage recorded in its checkpoint's metadata."""
    try:
        names = json.loads(metadata["trainable"])
    except (KeyError, json.JSONDecodeError):
        raise ArtifactError(f"{source}: metadata has no valid 'trainable' list (made by the finetune stage?)") from None
    return names


def adapter_factors(finetuned: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fine-tuned model's LoRA factors under the adapter's (PEFT) names."""
    return {peft_key(*lora_factor(k)): v for k, v in finetuned.items() if LORA_MARK in k}


def check_adapter_config(settings: dict, finetuned: dict[str, np.ndarray], source: str | Path) -> list[str]:
    """The adapter's config names the layers and the rank that the fine-tuned model's factors have."""
    factors = {lora_factor(k): v for k, v in finetuned.items() if LORA_MARK in k}
    modules = sorted({module for module, _ in factors})
    ranks = sorted({v.shape[0] for (_, part), v in factors.items() if part == "A"})
    failures = [] if sorted(settings["targets"]) == modules else [
        f"{source}: target_modules {sorted(settings['targets'])}, the fine-tuned model has LoRA on {modules}"]
    if ranks != [settings["rank"]]:
        failures.append(f"{source}: r = {settings['rank']}, the fine-tuned model's factors have rank {ranks}")
    return failures


def check_digests(proof: Proof, label: str | Path, actual: dict[str, str], expected: dict[str, str],
                  reference: str) -> list[str]:
    """Two {tensor: sha256} maps name the same tensors with the same digests."""
    proof.tensors_checked += len(actual)
    return _names_differ(label, actual, expected) + [f"{label}: tensor {k} differs from {reference} (sha256)"
                       for k in sorted(set(actual) & set(expected)) if actual[k] != expected[k]]


def check_zoo(proof: Proof, adapters: dict[Path, list[int]], manifest: dict[str, str],
              snapshot: dict[str, np.ndarray]) -> None:
    """For each zoo adapter (folder -> the digits it must be trained on): its record names those digits, training
    left the base tensors as the snapshot has them, its saved tensors are those training ended with (the digests
    recorded then), and its config fits them and the model. A missing or unreadable file is a failure too."""
    layers = {k[: -len(".weight")]: v.shape[::-1] for k, v in snapshot.items() if k.endswith(".weight")}  # (in, out)
    base, saved, config = [], [], []
    for adapter_dir, digits in adapters.items():
        record = adapter_dir / ZOO_RECORD
        try:
            trained_on = json_field(record, "digits")
            if trained_on != list(digits):
                config.append(f"{record}: trained on digits {trained_on}, expected {list(digits)}")
            base += check_digests(proof, record, json_field(record, "base_sha256"), manifest, "the snapshot")
            adapter, _ = read_safetensors(adapter_dir / ADAPTER_WEIGHTS)
            saved += check_digests(proof, adapter_dir / ADAPTER_WEIGHTS, {k: digest(v) for k, v in adapter.items()},
                                   json_field(record, "adapter_sha256"), "the trained factors")
            check_shapes({k: v.shape for k, v in adapter.items()},
                         adapter_shapes(load_settings(adapter_dir), layers, adapter_dir), adapter_dir / ADAPTER_WEIGHTS)
        except ArtifactError as exc:
            config.append(str(exc))
    proof.record("zoo_base_equals_snapshot", base)
    proof.record("zoo_adapters_equal_trained", saved)
    proof.record("zoo_adapters_readable_and_consistent", config)


def prove(snapshot_path: str | Path, manifest_path: str | Path, pretrained_path: str | Path,
          lora_dir: str | Path, zoo: dict[Path, list[int]] | None = None) -> Proof:
    """Every check, by name: the snapshot matches its manifest; the pretrained model and the fine-tuned model's
    frozen tensors equal the snapshot; only LoRA was trainable; the adapter's tensors and config match the
    fine-tuned model's LoRA factors; and, for each adapter of `zoo`, the checks of check_zoo. Files are read, never run."""
    proof, lora_dir = Proof(), Path(lora_dir)
    snapshot, _ = read_safetensors(snapshot_path)
    manifest = json_field(manifest_path, "tensors")
    proof.record("snapshot_manifest", check_manifest(snapshot, manifest, snapshot_path))
    pretrained, _ = read_safetensors(pretrained_path)
    proof.record("pretrained_equals_snapshot", check_same(proof, pretrained_path, pretrained, snapshot))
    finetuned, meta = read_safetensors(lora_dir / FINETUNED)
    proof.record("finetuned_base_equals_snapshot",
                 check_same(proof, lora_dir / FINETUNED, finetuned_base(finetuned), snapshot))
    proof.record("trainable_is_lora", check_trainable(recorded_trainable(meta, lora_dir / FINETUNED), finetuned))
    adapter, _ = read_safetensors(lora_dir / ADAPTER_WEIGHTS)
    proof.record("adapter_equals_finetuned", check_same(
        proof, lora_dir / ADAPTER_WEIGHTS, adapter, adapter_factors(finetuned), "the fine-tuned model's"))
    proof.record("adapter_config_matches",
                 check_adapter_config(load_settings(lora_dir), finetuned, lora_dir / ADAPTER_CONFIG))
    if zoo:
        check_zoo(proof, {Path(d): digits for d, digits in zoo.items()}, manifest, snapshot)
    return proof
