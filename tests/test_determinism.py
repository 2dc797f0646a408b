"""The `numerics` modes: one CPU code path, the same bits whatever the thread count (fast) or CPU vendor (portable);
and the record of how each stage computed (numerics.py)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from lora_mnist import numerics
from lora_mnist.cli import ArtifactError

needs_avx2 = pytest.mark.skipif(not numerics.has_avx2(), reason="pinning applies to x86-64 CPUs with AVX2")
PINNED = numerics.PINNED  # every variable pin() may set, in either mode
# What mkl_cbwr_get(MKL_CBWR_BRANCH) reported for fast mode's request, by CPU vendor, on the machines it was seen on:
# an Intel Xeon (issue 20) and AMD EPYCs (Zen 3, Zen 4; MKL honours the AVX2 branch on Intel CPUs only).
SEEN_MKL_BRANCH = {"GenuineIntel": "AVX2", "AuthenticAMD": "AUTO"}

# Fast-mode training at a given thread count; its last line is the record of how the process computed.
TRAIN = """
from lora_mnist.numerics import pin
pin("fast")  # as the stages do: before numpy or torch loads
import hashlib, json, sys, torch
from lora_mnist.base.model import RichBoyNet
from lora_mnist.base.train import train
from lora_mnist.numerics import configure_torch, generator, record
device = configure_torch("cpu", "fast")
assert device == torch.device("cpu"), device
torch.set_num_threads(int(sys.argv[1]))
g = generator(0)
torch.manual_seed(0)
model = RichBoyNet()  # the real sizes: MKL splits these GEMMs by thread count when left alone
images, labels = torch.randn(200, 784, generator=g), torch.randint(0, 10, (200,), generator=g)
losses = train(model, images, labels, [torch.arange(i, i + 10) for i in range(0, 200, 10)], steps=20, lr=1e-3, desc="t")
with torch.inference_mode():
    logits = model(images)
h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters()) + logits.numpy().tobytes())
print(torch.backends.cpu.get_cpu_capability(), h.hexdigest(), repr(losses[-1]))
print(json.dumps(record(device, blas=True)))
"""


def _python(script: str, *args: str, prefix: tuple[str, ...] = (), **env: str) -> list[str]:
    """The lines a fresh interpreter printed running `script`, started without the pins of this process."""
    clean = {k: v for k, v in os.environ.items() if k not in PINNED}
    return subprocess.run([*prefix, sys.executable, "-c", script, *args], env={**clean, **env}, check=True,
                          capture_output=True, text=True, timeout=300).stdout.strip().splitlines()


@pytest.fixture(scope="module")
def fast() -> dict[int, tuple[str, dict]]:
    """TRAIN at 1 and 2 threads, one process each: what it printed first, and its record."""
    return {threads: (out[0], json.loads(out[-1])) for threads in (1, 2) for out in [_python(TRAIN, str(threads))]}


@needs_avx2
def test_fast_training_is_bit_identical_for_any_thread_count(fast):
    (one, record_1), (two, record_2) = fast[1], fast[2]  # unpinned, 2 threads once differed from 1 and 3
    assert one.startswith("AVX2 ")
    assert one == two
    assert record_1["torch_threads"] == 1 and record_2["torch_threads"] == 2


def _unset(monkeypatch, keys) -> None:
    for key in keys:  # setenv first: teardown then restores the variable's absence too
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)


@needs_avx2
def test_pinning_after_a_cpu_op_is_an_error_not_a_silent_no_op(monkeypatch):
    _unset(monkeypatch, PINNED)
    monkeypatch.setattr(numerics, "_MODE", [])
    # What an AVX-512 machine reports if an op ran before the pin: the kernels are already chosen.
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    with pytest.raises(RuntimeError, match="after a torch CPU op"):
        numerics.pin("fast")


def test_one_mode_per_process_and_only_the_two_modes(monkeypatch):
    _unset(monkeypatch, PINNED)
    monkeypatch.setattr(numerics, "_MODE", [])
    monkeypatch.setattr(numerics, "has_avx2", lambda: False)  # threads only: this process's kernels stay as they are
    with pytest.raises(numerics.ConfigError, match="numerics = 'exact' is invalid: expected one of fast, portable"):
        numerics.pin("exact")
    numerics.pin("portable")
    numerics.pin("portable")  # again: a no-op
    with pytest.raises(RuntimeError, match=r"pin\('fast'\) after pin\('portable'\)"):
        numerics.pin("fast")  # MKL and ATen would keep the first mode's code paths: refuse, never mix


def test_no_pinning_without_avx2_but_one_openblas_thread(monkeypatch):
    monkeypatch.setattr(numerics.platform, "machine", lambda: "arm64")
    monkeypatch.setattr(numerics, "_MODE", [])
    _unset(monkeypatch, PINNED)
    assert numerics.has_avx2() is False
    assert numerics.pin("portable") is False
    x86 = {*numerics.CPU_NUMERICS["fast"], *numerics.CPU_NUMERICS["portable"], "OPENBLAS_CORETYPE"}
    assert not x86 & set(os.environ)  # no x86 code path is requested
    assert os.environ["OPENBLAS_NUM_THREADS"] == numerics.BLAS_NUMERICS["OPENBLAS_NUM_THREADS"]


def test_generator_is_seeded_and_leaves_the_global_one_alone():
    torch.manual_seed(1)
    expected_global = torch.rand(3)
    torch.manual_seed(1)
    a = torch.rand(4, generator=numerics.generator(7))
    assert torch.equal(a, torch.rand(4, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(torch.rand(3), expected_global)


@needs_avx2
def test_the_numerics_record_says_how_the_process_computed(fast):
    record = fast[1][1]  # after training on one thread
    assert record["numerics"] == "fast"
    assert record["aten_capability"] == "AVX2" and record["cpu_isa"] in ("avx2", "avx512")
    assert record["mkl_cbwr_requested"] == numerics.CPU_NUMERICS["fast"]["MKL_CBWR"]  # what pin() asked MKL for
    # What MKL runs is vendor-specific (and never includes the STRICT flag, which the query does not report):
    # assert the value seen on each vendor; elsewhere only that a branch is reported.
    vendor = record["cpu_vendor"]
    if vendor in SEEN_MKL_BRANCH:
        assert record["mkl_cbwr"] == SEEN_MKL_BRANCH[vendor]
    else:
        assert isinstance(record["mkl_cbwr"], str) and record["mkl_cbwr"]
    assert record["torch_threads"] == 1  # what the process set
    assert record["torch"] == torch.__version__ and record["numpy"] == np.__version__
    assert record["cpu"] and record["torch_device"] == "cpu"
    # numpy's BLAS as pinned for the stages that use it (blas=True)
    assert str(record["openblas_threads"]) == numerics.BLAS_NUMERICS["OPENBLAS_NUM_THREADS"]
    assert record["openblas_coretype"] == numerics.BLAS_NUMERICS["OPENBLAS_CORETYPE"]


@needs_avx2
def test_portable_mode_takes_effect_whatever_the_shell_says(portable):
    """numerics: portable is numpy's OpenBLAS on its Haswell kernels for every product, one thread, ATen's AVX2
    path (MKL, idle, on its COMPATIBLE branch); the param decides, not variables left in the user's shell."""
    record = portable["record"]
    assert record["numerics"] == "portable"
    assert not {"cpu", "cpu_vendor", "cpu_family_model", "cpu_isa"} & set(record)  # the same on every such CPU
    assert record["mkl_cbwr"] == "COMPATIBLE" and record["mkl_cbwr_requested"] == "COMPATIBLE"
    assert "torch_threads" not in record and record["aten_capability"] == "AVX2"  # the count decides nothing
    assert record["openblas_threads"] == 1 and record["cpu_products"] == numerics.PRODUCTS
    # OPENBLAS_CORETYPE forces OpenBLAS's kernel set by name, whatever the CPU: it reports the one forced.
    assert record["openblas_corename"].lower() == numerics.BLAS_NUMERICS["OPENBLAS_CORETYPE"].lower()


# Every product a portable stage computes: LoRA trained both ways (parametrize, lowrank), full fine-tuning, a
# scoring pass and a merge, on RichBoyNet with small hidden sizes. A TorchDispatchMode sees each aten op the CPU
# runs, forward and backward; every product op among them must be one the route took, counted by it. Run in a shell
# that asks for other numerics (HOSTILE), it also prints the process's record.
ROUTE = """
from lora_mnist.numerics import pin
pin("portable")
import json, torch
from torch.utils._python_dispatch import TorchDispatchMode
from lora_mnist import numerics
from lora_mnist.base.model import RichBoyNet
from lora_mnist.base.train import logits, train
from lora_mnist.lora.layer import apply_lora, freeze_non_lora, merge, set_lora_impl
device = numerics.configure_torch("cpu", "portable")
seen = {}
class Ops(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        seen[name] = seen.get(name, 0) + 1
        return func(*args, **(kwargs or {}))
g = torch.Generator().manual_seed(0)
images, labels = torch.randn(40, 784, generator=g), torch.randint(0, 10, (40,), generator=g)
batches = [torch.arange(i, i + 10) for i in range(0, 40, 10)]
with Ops():
    full = RichBoyNet(16, 12)
    train(full, images, labels, batches, steps=4, lr=1e-3, desc="full")
    for impl in ("parametrize", "lowrank"):
        model = RichBoyNet(16, 12)
        apply_lora(model, ["linear1", "linear2", "linear3"], 2, 2.0, generator=g)
        freeze_non_lora(model)
        set_lora_impl(model, impl)
        train(model, images, labels, batches, steps=4, lr=1e-3, desc=impl)
        logits(model, images)
    logits(merge(model), images)
try:
    torch.bmm(torch.ones(1, 2, 2), torch.ones(1, 2, 2))
    refused = ""
except RuntimeError as exc:
    refused = str(exc)
print(json.dumps({"seen": seen, "routed": numerics.product_calls, "refused": refused,
                  "record": numerics.record(device, blas=True)}))
"""
HOSTILE = {"MKL_CBWR": "AVX512", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
           "ATEN_CPU_CAPABILITY": "default"}
PRODUCT_OPS = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", "addr", "matmul", "linear",
               "_addmm_activation", "einsum", "tensordot", "_mkldnn_reshape", "mkldnn_linear"}


@pytest.fixture(scope="module")
def portable() -> dict:
    """ROUTE's result, run once for the portable-mode tests."""
    return json.loads(_python(ROUTE, **HOSTILE)[-1])


def test_portable_sends_every_product_through_openblas_and_refuses_the_other_routes(portable):
    result = portable
    products = {op: n for op, n in result["seen"].items() if op in PRODUCT_OPS or "mm" in op or "mkldnn" in op}
    # In inference mode the dispatch mode sees Linear and matmul themselves (each runs one addmm or mm below it).
    assert set(products) <= {"mm", "addmm", "linear", "matmul"}, products
    assert sum(products.values()) == sum(result["routed"].values())  # the route computed every one of them
    assert products["mm"] > 0 and products["addmm"] > 0
    assert "aten::bmm would compute them elsewhere" in result["refused"]


# The same portable training on one core and on two (torch's default thread count follows the cores): OpenBLAS on
# one thread, ATen's kernels elementwise or row by row, so the machine's core count cannot change the bits (two
# OpenBLAS threads would: it runs no more threads than it may use cores).
CORES = """
from lora_mnist.numerics import pin
pin("portable")
import hashlib, torch
from lora_mnist.base.model import RichBoyNet
from lora_mnist.base.train import logits, train
from lora_mnist.numerics import configure_torch
configure_torch("cpu", "portable")
g = torch.Generator().manual_seed(0)
torch.manual_seed(0)
model = RichBoyNet(300, 2000)  # Adam's update large enough for ATen to split it across threads
images, labels = torch.randn(100, 784, generator=g), torch.randint(0, 10, (100,), generator=g)
train(model, images, labels, [torch.arange(i, i + 10) for i in range(0, 100, 10)], steps=10, lr=1e-3, desc="t")
out = logits(model, images)
print(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters()) + out.numpy().tobytes())
      .hexdigest())
"""


@needs_avx2
@pytest.mark.skipif(not shutil.which("taskset") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs taskset and two cores to choose from")
def test_portable_bits_are_the_same_on_one_core_and_on_two():
    cores = sorted(os.sched_getaffinity(0))[:2]
    digests = {cpus: _python(CORES, prefix=("taskset", "-c", cpus))
               for cpus in (str(cores[0]), f"{cores[0]},{cores[1]}")}
    assert len(set(map(tuple, digests.values()))) == 1, digests


def test_numerics_merge_keeps_one_value_where_stages_agree_and_names_them_where_not():
    records = {"pretrain": {"cpu": "X", "torch_threads": 2}, "finetune": {"cpu": "X", "torch_threads": 1},
               "analyze": {"cpu": "X", "openblas_threads": 1}}
    assert numerics.merge_records(records) == {"cpu": "X", "openblas_threads": 1,
                                               "torch_threads": "pretrain=2; finetune=1"}


def test_the_numerics_stage_merges_every_stage_record(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    with pytest.raises(ArtifactError, match="no numerics records"):
        numerics.numerics(str(records), str(tmp_path / "numerics.json"))
    assert not (tmp_path / "numerics.json").exists()
    (records / "pretrain.json").write_text(json.dumps({"cpu": "X", "torch_threads": 2}))
    (records / "zoo.json").write_text(json.dumps({"cpu": "X", "torch_threads": 1, "numpy": "2"}))
    line = numerics.numerics(str(records), str(tmp_path / "numerics.json"))
    assert json.loads((tmp_path / "numerics.json").read_text()) == {
        "cpu": "X", "numpy": "2", "torch_threads": "pretrain=2; zoo=1"}
    assert "2 stages" in line
