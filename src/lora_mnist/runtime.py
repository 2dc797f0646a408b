"""Device and determinism, resolved in one place for every compute stage."""

from __future__ import annotations

import os

import torch

from lora_mnist.cpu import has_avx2
from lora_mnist.errors import ConfigError

# One CPU code path for every x86-64 machine with AVX2 (AVX-512 ones included) and every thread count.
# Left alone, ATen's vectorised kernels use the widest instructions the CPU has and MKL picks its GEMM
# kernels by CPU and thread count; each choice rounds differently, so the same params gave different
# models on different machines. Both variables are read at the first CPU op, not at `import torch`.
CPU_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}


def pin_cpu_numerics() -> bool:
    """Pin ATen and MKL to the AVX2 code path (unless the user set them); False where the CPU lacks AVX2."""
    if not has_avx2():
        return False
    for key, value in CPU_NUMERICS.items():
        os.environ.setdefault(key, value)
    if os.environ["ATEN_CPU_CAPABILITY"] == CPU_NUMERICS["ATEN_CPU_CAPABILITY"] \
            and torch.backends.cpu.get_cpu_capability() != "AVX2":
        raise RuntimeError("pin_cpu_numerics() ran after a torch CPU op had fixed the kernels: call it first")
    return True


def resolve_device(name: str) -> torch.device:
    """Map the `device` param to a torch.device; a requested accelerator that is absent is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise ConfigError("params: device = 'cuda' but no CUDA device is available (use cpu or auto)")
    if name == "mps" and not mps:
        raise ConfigError("params: device = 'mps' but no MPS device is available (use cpu or auto)")
    return torch.device(name)


def configure_torch(device: torch.device) -> None:
    """Call before any torch op: one CPU code path, no denormals; on accelerators, deterministic kernels as far
    as they allow (the CPU ones we use already are)."""
    pin_cpu_numerics()
    # Adam's second moments drift into float32 denormals during pretraining; x86 handles those in
    # microcode, which made steps 4x slower. Flushing them to zero is deterministic and harmless here.
    torch.set_flush_denormal(True)
    if device.type == "cpu":
        return  # the CPU kernels we use are deterministic; the flag below costs a 1.3 s import per stage
    # cuBLAS needs a fixed workspace for deterministic GEMMs; read when its first handle is created.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not crash, on an op CUDA lacks
    torch.backends.cudnn.benchmark = False


def generator(seed: int) -> torch.Generator:
    """A CPU generator: every random draw (init, shuffle) comes from one of these, never global state."""
    return torch.Generator().manual_seed(seed)
