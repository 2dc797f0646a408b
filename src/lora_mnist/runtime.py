"""Device and determinism, resolved in one place for every compute stage."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lora_mnist.cpu import cpu_identity, has_avx2
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
    """A CPU generator for fine-tuning's draws (LoRA init, shuffle). Pretraining alone seeds torch's global generator,
    as the seed does, so that seed 0 replays the seed's initial weights and data order (pretraining.py)."""
    return torch.Generator().manual_seed(seed)


# MKL's conditional-numerical-reproducibility branch codes (mkl_cbwr.h), as MKL reports the one in force.
_CBWR_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
                  10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}


def mkl_branch() -> str:
    """The CNR branch MKL actually uses (it ignores MKL_CBWR=AVX2 on non-Intel CPUs and falls back to AUTO)."""
    import ctypes

    try:  # torch links MKL statically; its service layer still exports the query
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return "unknown"
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    code = get(1)  # MKL_CBWR_BRANCH
    return _CBWR_BRANCHES.get(code & 0xFFFF, str(code)) + (",STRICT" if code & 0x10000 else "")


def numerics(device: torch.device) -> dict[str, str | int]:
    """How this process computes: CPU, ATen kernels, MKL branch, threads, torch, device (call after a torch op)."""
    record: dict[str, str | int] = {
        **cpu_identity(), "aten_capability": torch.backends.cpu.get_cpu_capability(), "mkl_cbwr": mkl_branch(),
        "mkl_cbwr_requested": os.environ.get("MKL_CBWR", "unset"), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "torch_device": device.type,
    }
    if device.type == "cuda":
        record["device_name"] = torch.cuda.get_device_name(device)
    return record
