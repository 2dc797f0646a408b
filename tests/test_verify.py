"""The proof that no original weight moved, on a tiny model: a snapshot and its manifest, an adapter trained as the
finetune stage trains it, saved with its training record; then every check passes the honest artifacts and names the
tensor and the check for each kind of tampering. Also the verify stage itself and the export of the full models.

(These replace an end-to-end test that ran `dvc repro` once per tampered file: same code, seconds instead of minutes.)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from synthetic import write_pretrained

from lora_mnist.artifacts import digest, read_json, read_safetensors
from lora_mnist.base.model import RichBoyNet, load_model
from lora_mnist.cli import ArtifactError, run_stage
from lora_mnist.config import LINEAR_NAMES, FinetuneParams, LoraParams
from lora_mnist.export import FINETUNED, MERGED, export
from lora_mnist.lora.adapter import load_adapter, save_adapter, training_record
from lora_mnist.lora.finetune import FinetuneSet, train_lora, tune
from lora_mnist.lora.layer import apply_lora, freeze_non_lora, lora_layers
from lora_mnist.lora.peft_format import ADAPTER_CONFIG, ADAPTER_WEIGHTS, RECORD, peft_key
from lora_mnist.verify import prove, read_manifest, take_snapshot, verify

CPU = torch.device("cpu")
CFG = FinetuneParams(seed=0, steps=3, batch_size=5, lr=0.01, replay=0.0)
LORA = LoraParams(rank=2, alpha=2.0, targets=LINEAR_NAMES)
CHECKS = {"snapshot_manifest", "pretrained_equals_snapshot", "base_untouched", "adapter_is_trained",
          "trainable_is_lora", "adapter_consistent"}


def digit_set(digits: list[int], n: int = 20, seed: int = 0) -> FinetuneSet:
    """Random images labelled with `digits` in turn: enough for a LoRA to learn something in three steps."""
    labels = torch.tensor([digits[i % len(digits)] for i in range(n)])
    return FinetuneSet(torch.randn(n, 784, generator=torch.Generator().manual_seed(seed)), labels, n, list(digits))


@dataclass(frozen=True)
class Artifacts:
    pretrained: Path
    snapshot: Path
    manifest: Path
    adapter: Path  # trained on digit 3, as the finetune stage trains and saves it
    pair: Path  # trained on digits 3 and 5, as the zoo's pair


def save_trained(model, data: FinetuneSet, losses: list[float], out: Path) -> Path:
    save_adapter(model, out, training_record(model, data.digits, data.n_target, losses))
    return out


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> Artifacts:
    root = tmp_path_factory.mktemp("honest")
    write_pretrained(root / "pretrained.safetensors", 8, 6)
    take_snapshot(root / "pretrained.safetensors", root / "snapshot.safetensors", root / "manifest.json")
    paths = {}
    for name, digits in {"adapter": [3], "pair": [3, 5]}.items():
        data = digit_set(digits)
        model, losses = train_lora(root / "pretrained.safetensors", data, CFG, LORA, CPU)
        paths[name] = save_trained(model, data, losses, root / name)
    return Artifacts(root / "pretrained.safetensors", root / "snapshot.safetensors", root / "manifest.json", **paths)


@pytest.fixture
def art(honest: Artifacts, tmp_path: Path) -> Artifacts:
    """A private copy of the honest artifacts, to tamper with."""
    copies = {}
    for field in ("pretrained", "snapshot", "manifest", "adapter", "pair"):
        src = getattr(honest, field)
        copies[field] = tmp_path / src.name
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, copies[field])
    return Artifacts(**copies)


def tamper(path: Path, key: str, delta: float) -> None:
    """Add `delta` to one element of tensor `key`, keeping the file valid safetensors with its metadata."""
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    tensors[key] = tensors[key].copy()
    tensors[key].reshape(-1)[3] += np.float32(delta)
    save_file(tensors, path, metadata=metadata)


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def proof_of(art: Artifacts, adapters: dict[Path, list[int]] | None = None):
    return prove(art.snapshot, art.manifest, art.pretrained, adapters or {art.adapter: [3], art.pair: [3, 5]})


def assert_names(proof, failed: set[str], needles: list[str]) -> None:
    """Exactly the checks `failed` failed, and every needle is in some failure line."""
    assert {check for check, ok in proof.checks.items() if not ok} == failed, proof.failures
    for needle in needles:
        assert any(needle in line for line in proof.failures), (needle, proof.failures)


def test_the_snapshot_is_a_byte_copy_with_a_digest_per_tensor(honest):
    assert honest.snapshot.read_bytes() == honest.pretrained.read_bytes()
    tensors, _ = read_safetensors(honest.pretrained)
    assert read_manifest(honest.manifest) == {k: digest(v) for k, v in tensors.items()}
    assert len(tensors) == 2 * len(LINEAR_NAMES)


def test_the_honest_artifacts_pass_every_check(honest):
    proof = proof_of(honest)
    assert proof.failures == [] and proof.checks == dict.fromkeys(CHECKS, True)
    # per adapter: 6 base tensors and 6 factors by digest; the pretrained model's 6 tensors bit for bit
    assert proof.tensors_checked == 6 + 2 * (6 + 6) and proof.max_abs_diff == 0.0


def test_a_modified_snapshot_tensor_is_named(art):
    tamper(art.snapshot, "linear2.bias", 0.5)
    assert_names(proof_of(art), {"snapshot_manifest", "pretrained_equals_snapshot"}, [
        f"{art.snapshot}: tensor linear2.bias does not match its manifest sha256",
        f"{art.pretrained}: tensor linear2.bias differs from the snapshot (max abs diff 0.5)"])


def test_a_modified_pretrained_tensor_is_named(art):
    tamper(art.pretrained, "linear1.weight", 0.5)
    proof = proof_of(art)
    assert_names(proof, {"pretrained_equals_snapshot"},
                 [f"{art.pretrained}: tensor linear1.weight differs from the snapshot (max abs diff 0.5)"])
    assert proof.max_abs_diff == pytest.approx(0.5)


def test_a_modified_adapter_factor_is_named(art):
    key = peft_key("linear1", "A")
    tamper(art.adapter / ADAPTER_WEIGHTS, key, 1e-3)
    assert_names(proof_of(art), {"adapter_is_trained"},
                 [f"{art.adapter / ADAPTER_WEIGHTS}: tensor {key} differs from the trained factors (sha256)"])


def test_a_base_weight_that_moved_during_training_is_named(art):
    data = digit_set([3])
    model, losses = train_lora(art.pretrained, data, CFG, LORA, CPU)
    with torch.no_grad():  # what a bug in freezing or in the parametrization would do
        model.linear3.parametrizations.weight.original[0, 0] += 1e-3
    save_trained(model, data, losses, art.adapter)
    assert_names(proof_of(art), {"base_untouched"},
                 [f"{art.adapter / RECORD}: tensor linear3.weight differs from the snapshot (sha256)"])


def test_a_non_lora_parameter_that_was_trainable_is_named(art):
    data = digit_set([3])
    model = load_model(art.pretrained)
    apply_lora(model, LORA.targets, LORA.rank, LORA.alpha, generator=torch.Generator().manual_seed(0))
    freeze_non_lora(model)
    model.linear2.bias.requires_grad_(True)  # forgotten: training moves it
    losses = tune(model, data, CFG, CPU, desc="test")
    save_trained(model, data, losses, art.adapter)
    assert_names(proof_of(art), {"trainable_is_lora", "base_untouched"}, [
        f"{art.adapter / RECORD}: non-LoRA parameter linear2.bias was trainable",
        f"{art.adapter / RECORD}: tensor linear2.bias differs from the snapshot (sha256)"])


def test_a_lora_factor_that_was_not_trainable_is_named(art):
    edit_json(art.adapter / RECORD, lambda r: r["trainable"].remove("linear2.parametrizations.weight.0.lora_B"))
    assert_names(proof_of(art), {"trainable_is_lora"},
                 [f"LoRA factor {peft_key('linear2', 'B')} was not trainable"])


@pytest.mark.parametrize("name", [ADAPTER_WEIGHTS, ADAPTER_CONFIG, RECORD])
def test_a_missing_adapter_file_is_named(art, name):
    (art.pair / name).unlink()
    assert_names(proof_of(art), {"adapter_consistent"}, [f"{art.pair / name}: file not found"])


def test_an_adapter_recorded_for_other_digits_is_named(art):
    proof = proof_of(art, {art.adapter: [5], art.pair: [5, 3]})  # digit 3's adapter where 5's should be
    assert_names(proof, {"adapter_consistent"}, [f"{art.adapter / RECORD}: trained on digits [3], expected [5]",
                                                 f"{art.pair / RECORD}: trained on digits [3, 5], expected [5, 3]"])


@pytest.mark.parametrize("r,needle", [
    (3, f"tensor '{peft_key('linear1', 'A')}' has shape (2, 784), expected (3, 784)"),  # the factors are rank 2
    (9, "r = 9 is invalid for 'linear1' (784 -> 8): allowed is 1 <= r <= 8"),  # no rank-9 factors fit 784 -> 8
    (0, "r=0 is invalid"),
])
def test_a_config_whose_r_does_not_fit_the_tensors_is_named(art, r, needle):
    edit_json(art.adapter / ADAPTER_CONFIG, lambda c: c.update(r=r))
    assert_names(proof_of(art), {"adapter_consistent"}, [needle])


def test_the_stage_writes_what_failed_and_exits_with_one_line(art, tmp_path, capsys):
    zoo = tmp_path / "zoo"
    shutil.copytree(art.adapter, zoo / "3")
    shutil.copytree(art.pair, zoo / "pair")
    (tmp_path / "selection.json").write_text(json.dumps({"target": {"digit": 3}}))
    out = {"metrics_out": tmp_path / "verify.json", "headline_out": tmp_path / "headline.json"}

    def stage():
        return verify((3,), (3, 5), str(art.snapshot), str(art.manifest), str(art.pretrained),
                      str(tmp_path / "selection.json"), str(art.adapter), str(zoo), **{k: str(v) for k, v in out.items()})

    stage()
    metrics = read_json(out["metrics_out"])
    assert metrics["passed"] is True and metrics["failures"] == [] and set(metrics["checks"]) == CHECKS
    assert read_json(out["headline_out"])["verified"] is True
    tamper(zoo / "pair" / ADAPTER_WEIGHTS, peft_key("linear3", "B"), 1e-3)
    with pytest.raises(SystemExit) as info:
        run_stage(stage)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert f"{zoo / 'pair' / ADAPTER_WEIGHTS}: tensor {peft_key('linear3', 'B')} differs" in err
    metrics = read_json(out["metrics_out"])  # written on failure too: it names what failed
    assert metrics["passed"] is False and metrics["checks"]["adapter_is_trained"] is False
    assert any(peft_key("linear3", "B") in line for line in metrics["failures"])
    assert read_json(out["headline_out"])["verified"] is False


@pytest.fixture
def numerics_sandbox(monkeypatch):
    """export() sets torch up as the stages do (numerics.configure_torch): keep its environment variables and
    flush-denormal mode from leaking into other tests, and do not assume which ATen code path this process's first
    CPU op chose (configure_torch refuses to pin AVX2 after another path was fixed); and undo portable mode's product
    route, which would otherwise stay for every later test in this process."""
    from lora_mnist import numerics

    monkeypatch.setattr(numerics, "_MODE", [])  # this process's mode, whatever an earlier test pinned
    threads = torch.get_num_threads()
    for key in (*numerics.PINNED, "CUBLAS_WORKSPACE_CONFIG"):
        present = key in os.environ
        monkeypatch.setenv(key, os.environ.get(key, ""))  # restored (or removed) after the test
        if not present:
            monkeypatch.delenv(key)
    if "ATEN_CPU_CAPABILITY" not in os.environ:  # the code path in force, whatever the CPU
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", torch.backends.cpu.get_cpu_capability().lower())
    flushing = bool((torch.tensor([1e-39], dtype=torch.float32) * 1.5)[0] == 0)
    routed = bool(numerics._ROUTE)
    yield
    if not routed and numerics._ROUTE:
        numerics._ROUTE.pop()._destroy()  # torch.library's own way to drop a registration
    torch.set_flush_denormal(flushing)
    torch.set_num_threads(threads)


def test_export_writes_the_fine_tuned_and_the_merged_model(honest, tmp_path, numerics_sandbox):
    written = export(honest.pretrained, honest.adapter, honest.manifest, tmp_path / "out", "portable")
    assert sorted(written) == sorted(str(tmp_path / "out" / name) for name in (FINETUNED, MERGED))
    lora = load_model(honest.pretrained)
    load_adapter(lora, honest.adapter)
    merged = load_model(tmp_path / "out" / MERGED)  # a plain RichBoyNet: no LoRA code needed
    assert type(merged) is RichBoyNet and not lora_layers(merged)
    x = torch.randn(64, 784, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(merged(x), lora(x))  # the very same weight expression, so bit-identical
        assert not torch.equal(merged(x), load_model(honest.pretrained)(x))  # and the adapter is in it
    tensors, metadata = read_safetensors(tmp_path / "out" / FINETUNED, framework="pt")
    state = lora.state_dict()
    assert tensors.keys() == state.keys() and all(torch.equal(tensors[k], v) for k, v in state.items())
    assert json.loads(metadata["trainable"]) == read_json(honest.adapter / RECORD)["trainable"]


@pytest.mark.parametrize("what", ["adapter factor", "pretrained tensor", "record"])
def test_export_refuses_a_tampered_adapter_or_base(art, tmp_path, numerics_sandbox, what):
    if what == "adapter factor":
        tamper(art.adapter / ADAPTER_WEIGHTS, peft_key("linear2", "A"), 1e-3)
        needle = peft_key("linear2", "A")
    elif what == "pretrained tensor":  # the base the full models would be built on
        tamper(art.pretrained, "linear1.weight", 0.5)
        needle = "linear1.weight"
    else:  # training moved a base weight: the adapter only fits the moved one
        edit_json(art.adapter / RECORD, lambda r: r["base_sha256"].update({"linear3.bias": "0" * 64}))
        needle = "linear3.bias"
    with pytest.raises(ArtifactError, match="export refused") as info:
        export(art.pretrained, art.adapter, art.manifest, tmp_path / "out", "portable")
    assert needle in str(info.value)
    assert not (tmp_path / "out" / FINETUNED).exists() and not (tmp_path / "out" / MERGED).exists()
