"""Which CPU this is, and one numpy BLAS code path for it (torch-free: imported before numpy)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# numpy's bundled OpenBLAS picks kernels by CPU and splits work by thread count, and both change the
# rounding (analyze's norms differed in the last digits between 1 and 2 threads). Read when numpy loads.
BLAS_NUMERICS = {"OPENBLAS_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Haswell"}


def has_avx2() -> bool:
    """An x86-64 Linux CPU with AVX2 and FMA (where pinning to that code path is safe: no library checks)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return {"avx2", "fma"} <= set(flags.split())


def pin_blas() -> None:
    """One thread, and the Haswell (AVX2) kernels where the CPU has them; call before numpy is imported."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", BLAS_NUMERICS["OPENBLAS_NUM_THREADS"])
    if has_avx2():
        os.environ.setdefault("OPENBLAS_CORETYPE", BLAS_NUMERICS["OPENBLAS_CORETYPE"])
