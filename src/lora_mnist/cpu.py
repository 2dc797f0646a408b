"""Which CPU this is, and one numpy BLAS code path for it (torch-free: imported before numpy)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# numpy's bundled OpenBLAS picks kernels by CPU and splits work by thread count, and both change the
# rounding (analyze's norms differed in the last digits between 1 and 2 threads). Read when numpy loads.
BLAS_NUMERICS = {"OPENBLAS_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Haswell"}


@functools.cache  # read by the pins, the numerics record and has_avx2, once per process
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


def blas_numerics() -> dict[str, str | int]:
    """How numpy's OpenBLAS computes in this process (call after pin_blas): the record torch-free stages keep."""
    import numpy as np

    return {**cpu_identity(), "numpy": np.__version__,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "auto"),
            "openblas_threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0") or 0)}


def has_avx2() -> bool:
    """An x86-64 Linux CPU with AVX2 and FMA (where pinning to that code path is safe: no library checks)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    return {"avx2", "fma"} <= set(_cpuinfo().get("flags", "").split())


def pin_blas() -> None:
    """One thread, and the Haswell (AVX2) kernels where the CPU has them; call before numpy is imported."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", BLAS_NUMERICS["OPENBLAS_NUM_THREADS"])
    if has_avx2():
        os.environ.setdefault("OPENBLAS_CORETYPE", BLAS_NUMERICS["OPENBLAS_CORETYPE"])
