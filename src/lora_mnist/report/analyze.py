"""The low-rank hypothesis, tested: singular-value spectra of real weight updates, LoRA's beside full fine-tuning's
(numpy: computed with the BLAS numerics.pin() fixes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lora_mnist.artifacts import check_shapes, json_field, read_safetensors
from lora_mnist.config import LINEAR_NAMES, layer_shapes
from lora_mnist.lora.peft_format import (ADAPTER_WEIGHTS, adapter_bytes, adapter_shapes, load_settings, lora_scale,
                                         peft_key)

TOP_K = 64  # singular values kept for the spectrum plot


def singular_values(delta: np.ndarray) -> np.ndarray:
    """Singular values of an update (out, in), descending, in float64 for a clean tail."""
    return np.linalg.svd(np.asarray(delta, dtype=np.float64), compute_uv=False)


def lowrank_singular_values(b: np.ndarray, a: np.ndarray, scale: float) -> np.ndarray:
    """Singular values of scale * B @ A for B (out, r), A (r, in), from an r x r core: no (out, in) SVD."""
    _, rb = np.linalg.qr(np.asarray(b, np.float64))  # B = Qb Rb, Qb orthonormal (out, r)
    _, ra = np.linalg.qr(np.asarray(a, np.float64).T)  # A.T = Qa Ra, so B @ A = Qb (Rb Ra.T) Qa.T
    return np.linalg.svd(scale * rb @ ra.T, compute_uv=False)


def effective_rank(s: np.ndarray, energy: float) -> int:
    """Fewest singular values whose squares hold `energy` of the total (0 for a zero update)."""
    power = np.square(np.asarray(s, dtype=np.float64))
    total = power.sum()
    if total == 0:
        return 0
    share = np.cumsum(power) / total
    return int((share < energy - 1e-12).sum()) + 1


def spectrum_stats(s: np.ndarray, base: np.ndarray) -> tuple[dict[str, float | int], list[float]]:
    """Effective ranks (90 % / 99 % energy), relative size ||dW|| / ||W|| (||dW||_F from s) and the top spectrum."""
    power = float(np.square(s).sum())
    stats = {
        "rank_90": effective_rank(s, 0.90),
        "rank_99": effective_rank(s, 0.99),
        "top1_energy": float(s[0] ** 2 / power) if power > 0 else 0.0,
        "rel_norm": float(np.sqrt(power) / np.linalg.norm(np.asarray(base, np.float64))),
    }
    return stats, [float(v) for v in s[:TOP_K]]


def _shapes(tensors: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: v.shape for k, v in tensors.items()}


def _richboynet(base: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """The tensors (name -> shape) of a RichBoyNet state dict with `base`'s hidden sizes (0 where unreadable)."""
    h1, h2 = (base[f"{n}.weight"].shape[0] if f"{n}.weight" in base else 0 for n in ("linear1", "linear2"))
    shapes = {}
    for name, (n_in, n_out) in layer_shapes(h1, h2).items():
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (n_out, n_in), (n_out,)
    return shapes


def full_spectra(
    base: dict[str, np.ndarray], full: dict[str, np.ndarray], sources: tuple[str, str] = ("pretrained", "full")
) -> dict[str, tuple[dict, list[float]]]:
    """Per layer, stats and top spectrum of full fine-tuning's update W_full - W_0 (plain state dicts)."""
    check_shapes(_shapes(base), _richboynet(base), sources[0])
    check_shapes(_shapes(full), _shapes(base), sources[1])
    out = {}
    for name in LINEAR_NAMES:
        w0 = base[f"{name}.weight"].astype(np.float64)
        out[name] = spectrum_stats(singular_values(full[f"{name}.weight"].astype(np.float64) - w0), w0)
    return out


def full_report(base: dict[str, np.ndarray], full: dict[str, np.ndarray], size: dict[str, int],
                sources: tuple[str, str]) -> tuple[dict, dict[str, list[float]]]:
    """The full fine-tuning analysis's metrics layout (per layer stats and top spectrum; `size`, the trainable
    parameters and checkpoint bytes) and the top spectra; `sources` name the two state dicts in errors."""
    results = full_spectra(base, full, sources)
    tops = {name: top for name, (_, top) in results.items()}
    metrics = {"layers": {name: stats for name, (stats, _) in results.items()}, "spectra": tops, "size": size}
    return metrics, tops


def lora_spectra(
    base: dict[str, np.ndarray], adapter: dict[str, np.ndarray], settings: dict[str, Any],
    sources: tuple[str, str] = ("pretrained", "adapter"),
) -> dict[str, tuple[dict, list[float]]]:
    """Per layer, stats and spectrum of the LoRA update scale * B @ A (zero for an untargeted layer).

    `adapter` holds PEFT tensors and `settings` its parsed config; `sources` name the two files in errors.
    """
    base_src, adapter_src = sources
    check_shapes(_shapes(base), _richboynet(base), base_src)
    layers = {name: base[f"{name}.weight"].shape[::-1] for name in LINEAR_NAMES}  # (out, in) -> (in, out)
    check_shapes(_shapes(adapter), adapter_shapes(settings, layers, adapter_src), adapter_src)
    scale = lora_scale(settings["alpha"], settings["rank"], settings["scaling"])
    out = {}
    for name in LINEAR_NAMES:
        w0 = base[f"{name}.weight"].astype(np.float64)
        if name in settings["targets"]:
            s = lowrank_singular_values(adapter[peft_key(name, "B")], adapter[peft_key(name, "A")], scale)
        else:
            s = np.zeros(1)
        out[name] = spectrum_stats(s, w0)
    return out


def lora_vs_full(pretrained: str | Path, lora_dir: str | Path, full_metrics: str | Path) -> dict:
    """The metrics JSON layout: per layer, full and LoRA stats and the LoRA update's singular values; sizes. The full
    fine-tuning side comes from analyze_full's metrics file, not recomputed."""
    base, _ = read_safetensors(pretrained)
    lora_dir = Path(lora_dir)  # the PEFT adapter files, beside the fine-tuned model
    adapter, _ = read_safetensors(lora_dir / ADAPTER_WEIGHTS)
    lora = lora_spectra(base, adapter, load_settings(lora_dir), (str(pretrained), str(lora_dir / ADAPTER_WEIGHTS)))
    full_layers = json_field(full_metrics, "layers")
    return {
        "layers": {n: {"full": full_layers[n], "lora": stats} for n, (stats, _) in lora.items()},
        "spectra": {"lora": {n: top for n, (_, top) in lora.items()}},
        "size": {"lora": {"trainable_params": sum(t.size for t in adapter.values()), "bytes": adapter_bytes(lora_dir)},
                 "full": json_field(full_metrics, "size")},
    }
