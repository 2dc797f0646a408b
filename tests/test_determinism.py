"""One CPU code path: the same params give the same bits whatever the thread count (and AVX2+ CPU)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from lora_mnist import cpu, runtime

needs_avx2 = pytest.mark.skipif(not cpu.has_avx2(), reason="pinning applies to x86-64 CPUs with AVX2")

TRAIN = """
import hashlib, sys, torch
from lora_mnist.model import RichBoyNet
from lora_mnist.runtime import configure_torch, generator
from lora_mnist.train import train
configure_torch(torch.device("cpu"))
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
"""


def _run(threads: int) -> str:
    env = {k: v for k, v in os.environ.items() if k not in runtime.CPU_NUMERICS}
    return subprocess.run([sys.executable, "-c", TRAIN, str(threads)], env=env, check=True,
                          capture_output=True, text=True).stdout


@needs_avx2
def test_training_is_bit_identical_for_any_thread_count():
    runs = {threads: _run(threads) for threads in (1, 2)}  # unpinned, 2 threads once differed from 1 and 3
    assert runs[1].startswith("AVX2 ")
    assert runs[1] == runs[2]


@needs_avx2
def test_pinning_after_a_cpu_op_is_an_error_not_a_silent_no_op(monkeypatch):
    for key in runtime.CPU_NUMERICS:  # setenv first: teardown then restores the variable's absence too
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    # What an AVX-512 machine reports if an op ran before the pin: the kernels are already chosen.
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    with pytest.raises(RuntimeError, match="after a torch CPU op"):
        runtime.pin_cpu_numerics()


def test_no_pinning_without_avx2(monkeypatch):
    monkeypatch.setattr(cpu.platform, "machine", lambda: "arm64")
    monkeypatch.setenv("MKL_CBWR", "")
    monkeypatch.delenv("MKL_CBWR")
    assert runtime.pin_cpu_numerics() is False
    assert "MKL_CBWR" not in os.environ


RECORD = """
import json, torch
from lora_mnist.runtime import configure_torch, numerics
configure_torch(torch.device("cpu"))
torch.ones(8, 8) @ torch.ones(8, 8)
print(json.dumps(numerics(torch.device("cpu"))))
"""


def _record(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (*runtime.CPU_NUMERICS, "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", RECORD], env={**clean, **env}, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@needs_avx2
def test_the_numerics_record_says_how_the_process_computed():
    record = _record()
    assert record["aten_capability"] == "AVX2" and record["mkl_cbwr_requested"] == "AVX2,STRICT"
    # MKL honours AVX2 on Intel CPUs only; elsewhere it reports the AUTO branch it falls back to.
    assert record["mkl_cbwr"] == ("AVX2,STRICT" if record["cpu_vendor"] == "GenuineIntel" else "AUTO")
    assert record["torch_threads"] == torch.get_num_threads() and record["torch"] == torch.__version__
    assert record["cpu"] and record["torch_device"] == "cpu"


@needs_avx2
def test_the_documented_cross_vendor_override_takes_effect():
    """README: MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=1 dvc repro: the user's setting wins over the pinned one."""
    record = _record(MKL_CBWR="COMPATIBLE", OMP_NUM_THREADS="1")
    assert record["mkl_cbwr"] == "COMPATIBLE" and record["mkl_cbwr_requested"] == "COMPATIBLE"
    assert record["torch_threads"] == 1 and record["aten_capability"] == "AVX2"
