"""How the results are computed, decided in one place: the `numerics` mode's CPU code paths, pinned before any
numeric library loads, the device, the seeded generator, and the record of all that which every compute stage
writes beside its results.

torch is imported inside the functions that need it, so that pin() runs before torch loads.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from pathlib import Path
from typing import Any

from lora_mnist.cli import ArtifactError, ConfigError

# The `numerics` param picks one of two ways to compute; both take one CPU code path on every x86-64 machine with
# AVX2 (AVX-512 ones included). Left alone, ATen's vectorised kernels use the widest instructions the CPU has and
# MKL picks its GEMM kernels by CPU and thread count; each choice rounds differently, so the same params gave
# different models on different machines. MKL and ATen read these variables at their first CPU op, not at import.
#   fast:     ATen's AVX2 path and MKL's AVX2 branch (MKL honours it on Intel CPUs only; AMD ones run AUTO), all
#             cores. The same bits on one machine whatever the thread count; not across CPU vendors.
#   portable: ATen's AVX2 path, and every matrix product through numpy's OpenBLAS on its Haswell kernels
#             (route_products): the same machine code on every AVX2 CPU, Intel or AMD. OpenBLAS on one thread, as
#             its bits depend on its thread count and it never runs more threads than the cores it may use (two
#             threads on one core gave one thread's bits: bench/products.py). ATen's own threads do not decide the
#             bits (its kernels here are elementwise or row by row), so torch keeps its default count.
#             MKL, which computes nothing then, stays on its COMPATIBLE branch.
MODES = ("fast", "portable")
CPU_NUMERICS = {
    "fast": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"},
    "portable": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"},
}
# numpy's bundled OpenBLAS picks kernels by CPU and splits work by thread count, and both change the
# rounding (the spectra's norms differed in the last digits between 1 and 2 threads). Read when numpy loads.
BLAS_NUMERICS = {"OPENBLAS_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Haswell"}
# Every variable pin() may set, in either mode.
PINNED = tuple(dict.fromkeys([*CPU_NUMERICS["fast"], *CPU_NUMERICS["portable"], *BLAS_NUMERICS]))


@functools.cache  # read by the pins and the record, once per process
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_identity() -> dict[str, str]:
    """CPU model name and vendor, as the kernel reports them: the first thing to compare between machines."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    # Hypervisors often report a bare "AMD EPYC": family/model and the widest vector unit tell machines apart.
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else platform.machine()
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "cpu_vendor": info.get("vendor_id", "unknown"),
            "cpu_family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}", "cpu_isa": isa}


def has_avx2() -> bool:
    """An x86-64 Linux CPU with AVX2 and FMA (where pinning to that code path is safe: no library checks)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    return {"avx2", "fma"} <= set(_cpuinfo().get("flags", "").split())


_MODE: list[str] = []  # the mode pin() set in this process: one per process, as MKL and ATen read it only once


def pin(mode: str) -> bool:
    """Set the variables of numerics mode `mode` (fast | portable) for numpy's OpenBLAS and torch's ATen and MKL,
    over whatever the shell had (the param decides, and DVC tracks it); call before numpy or torch computes.
    False where the CPU lacks AVX2: then only OpenBLAS's thread count is fixed."""
    if mode not in MODES:
        raise ConfigError(f"params: numerics = {mode!r} is invalid: expected one of {', '.join(MODES)}")
    if _MODE and _MODE[0] != mode:
        raise RuntimeError(f"numerics.pin({mode!r}) after pin({_MODE[0]!r}) in one process: MKL and ATen keep the "
                           "first mode's code paths")
    _MODE[:] = [mode]
    os.environ["OPENBLAS_NUM_THREADS"] = BLAS_NUMERICS["OPENBLAS_NUM_THREADS"]
    if not has_avx2():
        return False
    os.environ["OPENBLAS_CORETYPE"] = BLAS_NUMERICS["OPENBLAS_CORETYPE"]
    os.environ.update(CPU_NUMERICS[mode])
    if "torch" in sys.modules:
        import torch

        if torch.backends.cpu.get_cpu_capability() != "AVX2":
            raise RuntimeError("numerics.pin() ran after a torch CPU op had fixed the kernels: call it first")
    return True


def resolve_device(name: str):  # -> torch.device
    """Map the `device` param to a torch.device; a requested accelerator that is absent is an error."""
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise ConfigError("params: device = 'cuda' but no CUDA device is available (use cpu or auto)")
    if name == "mps" and not mps:
        raise ConfigError("params: device = 'mps' but no MPS device is available (use cpu or auto)")
    return torch.device(name)


def configure_torch(name: str, mode: str):  # -> torch.device
    """The device for the `device` param, with torch set up to compute the same bits every run in numerics mode
    `mode`: one CPU code path, its thread count, no denormals; on accelerators, deterministic kernels as far as they
    allow (the CPU ones we use already are)."""
    pin(mode)
    device = resolve_device(name)
    import torch

    # Adam's second moments drift into float32 denormals during pretraining; x86 handles those in
    # microcode, which made steps 4x slower. Flushing them to zero is deterministic and harmless here.
    torch.set_flush_denormal(True)
    if mode == "portable" and device.type == "cpu":
        route_products()
    if device.type != "cpu":  # the CPU kernels we use are deterministic; the flag below costs a 1.3 s import
        # cuBLAS needs a fixed workspace for deterministic GEMMs; read when its first handle is created.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not crash, on an op CUDA lacks
        torch.backends.cudnn.benchmark = False
    return device


# portable: every CPU matrix product through numpy's OpenBLAS, on its Haswell kernels (BLAS_NUMERICS) and one thread:
# the same machine code on every x86-64 CPU with AVX2 and FMA, at an AVX2 kernel's speed (MKL's COMPATIBLE branch,
# the route before, multiplied at a third of it). mm and addmm are all RichBoyNet and LoRA use: Linear's forward,
# every backward product, LoRA's B @ A. The other product ops are refused in this process, so a product that would
# compute elsewhere stops the stage instead of changing the bits.
ROUTED = ("mm", "addmm")
REFUSED = ("mm.out", "addmm.out", "addmm_", "_addmm_activation", "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot",
           "vdot", "addr")
PRODUCTS = "numpy OpenBLAS"  # the record's name for the route
_ROUTE: list[Any] = []  # the torch.library registration: alive as long as the process (dropping it undoes the route)
product_calls: dict[str, int] = dict.fromkeys(ROUTED, 0)  # products routed in this process, by op (tests count them)


def route_products() -> None:
    """Send this process's CPU mm and addmm through numpy's OpenBLAS and refuse the other product ops (idempotent)."""
    if _ROUTE:
        return
    import warnings

    import numpy as np
    import torch

    def blas_view(t: torch.Tensor) -> np.ndarray:  # (m, k): row- or column-major as it is, BLAS reads either
        if t.dtype not in (torch.float32, torch.float64):
            raise RuntimeError(f"numerics: portable has no matrix product for {t.dtype}")
        t = t.detach()
        return (t if t.is_contiguous() or t.t().is_contiguous() else t.contiguous()).numpy()

    def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        product_calls["mm"] += 1
        return torch.from_numpy(np.matmul(blas_view(a), blas_view(b)))

    def addmm(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta=1, alpha=1) -> torch.Tensor:
        product_calls["addmm"] += 1  # beta * c + alpha * (a @ b); c broadcasts, as Linear's bias (out,)
        out = torch.from_numpy(np.matmul(blas_view(a), blas_view(b)))
        if alpha != 1:
            out.mul_(alpha)
        return out.add_(c, alpha=beta) if beta != 0 else out

    def refuse(op: str):
        def refused(*args, **kwargs):
            raise RuntimeError(f"numerics: portable computes CPU matrix products through {' and '.join(ROUTED)} "
                               f"only; aten::{op} would compute them elsewhere")
        return refused

    lib = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():  # "Overriding a previously registered kernel": that is the point
        warnings.simplefilter("ignore", UserWarning)
        lib.impl("mm", mm, "CPU")
        lib.impl("addmm", addmm, "CPU")
        for op in REFUSED:
            lib.impl(op, refuse(op), "CPU")
    _ROUTE.append(lib)


def generator(seed: int):  # -> torch.Generator
    """A CPU generator for fine-tuning's draws (LoRA init, shuffle). Pretraining alone seeds torch's global generator,
    as the seed does, so that seed 0 replays the seed's initial weights and data order (base/pretrain.py)."""
    import torch

    return torch.Generator().manual_seed(seed)


# MKL's conditional-numerical-reproducibility branch codes (mkl_cbwr.h), as mkl_cbwr_get(MKL_CBWR_BRANCH) reports
# the one in force. That query returns the branch only, never the STRICT flag (oneMKL reference, mkl_cbwr_get).
_CBWR_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
                  10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}
MKL_CBWR_BRANCH = 1


def mkl_branch() -> str:
    """The CNR branch MKL actually uses (it honours MKL_CBWR=AVX2 on Intel CPUs; elsewhere it falls back to AUTO)."""
    import ctypes

    import torch

    try:  # torch links MKL statically; its service layer still exports the query
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return "unknown"
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    code = get(MKL_CBWR_BRANCH)
    return _CBWR_BRANCHES.get(code, str(code))


def machine() -> dict[str, str]:
    """The CPU, where it decides the bits: in fast mode, or where nothing could be pinned. In portable mode on an
    AVX2 CPU the record holds only what decides them, the same on every such machine: so that dvc.lock and
    metrics/numerics.json stay the same too (the stages print the CPU instead)."""
    return {} if _portable() else cpu_identity()


def _portable() -> bool:
    """Portable mode pinned on an AVX2 CPU: where neither the CPU nor torch's thread count decides the bits."""
    return _MODE == ["portable"] and has_avx2()


def openblas_corename() -> str:
    """The kernel set numpy's bundled OpenBLAS runs (what OPENBLAS_CORETYPE forced, else what it detected)."""
    import ctypes

    import numpy as np

    for lib in sorted((Path(np.__file__).parent.parent / "numpy.libs").glob("libscipy_openblas*.so")):
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename"):
            get = getattr(ctypes.CDLL(str(lib)), name, None)  # the library numpy loaded: same handle
            if get is not None:
                get.restype = ctypes.c_char_p
                return get().decode()
    return "unknown"


def _mode_record() -> dict[str, Any]:
    """What every record starts with: the machine where it decides the bits, and the mode."""
    return {**machine(), "numerics": _MODE[0] if _MODE else "unpinned"}


def blas_record() -> dict[str, Any]:
    """How numpy's OpenBLAS computes in this process (after pin()): the record of the torch-free stages."""
    import numpy as np

    return {**_mode_record(), "numpy": np.__version__,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "auto"), "openblas_corename": openblas_corename(),
            "openblas_threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0") or 0)}


def record(device, blas: bool = False) -> dict[str, Any]:
    """How this process computes: CPU, ATen kernels, what computed the CPU matrix products (and MKL's branch),
    threads, torch, device, and numpy's BLAS where products or the stage went through it (call after a torch op)."""
    import torch

    routed = bool(_ROUTE) and device.type == "cpu"
    out: dict[str, Any] = {
        **(blas_record() if blas or routed else _mode_record()),
        "aten_capability": torch.backends.cpu.get_cpu_capability(), "cpu_products": PRODUCTS if routed else "MKL",
        "mkl_cbwr": mkl_branch(), "mkl_cbwr_requested": os.environ.get("MKL_CBWR", "unset"),
        "torch": torch.__version__, "torch_device": device.type,
    }
    if not _portable():  # portable: the bits are the same whatever torch's thread count (route_products)
        out["torch_threads"] = torch.get_num_threads()
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    return out


def merge_records(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One value per field where every stage that records it agrees, else `stage=value; ...`: short and stable."""
    merged: dict[str, Any] = {}
    for key in sorted({k for rec in records.values() for k in rec}):
        values = {stage: rec[key] for stage, rec in records.items() if key in rec}
        distinct = set(map(str, values.values()))
        merged[key] = next(iter(values.values())) if len(distinct) == 1 else "; ".join(
            f"{stage}={value}" for stage, value in values.items())
    return merged


def numerics(records_dir: str, numerics_out: str) -> str:
    """The stage `numerics`: every compute stage's record (<records_dir>/<stage>.json) merged into one file, the one
    `dvc exp show` lists; returns a summary line."""
    from lora_mnist.artifacts import read_json, write_json

    records = {p.stem: read_json(p) for p in sorted(Path(records_dir).glob("*.json"))}
    if not records:
        raise ArtifactError(f"{records_dir}: no numerics records (*.json) from the compute stages")
    merged = merge_records(records)
    write_json(numerics_out, merged)
    cpu = cpu_identity()
    return (f"numerics: {len(records)} stages, {merged.get('numerics')} mode, ATen {merged.get('aten_capability')}, "
            f"CPU products {merged.get('cpu_products')}; this machine: {cpu['cpu']} ({cpu['cpu_vendor']}, family/model "
            f"{cpu['cpu_family_model']}, {cpu['cpu_isa']})")
