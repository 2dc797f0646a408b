"""The plots: data files DVC renders (JSON rows; the loss TSVs are train.py's) and the PNG figures people look at
(matplotlib, imported on demand), each written atomically with stable bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lora_mnist.artifacts import atomic_path, write_json


def write_confusion(path: str | Path, labels: Sequence[int], predictions: Sequence[int]) -> None:
    """One row per test image, `{"actual", "predicted"}`: what DVC's confusion template counts."""
    write_json(path, [{"actual": int(a), "predicted": int(p)} for a, p in zip(labels, predictions, strict=True)])


def spectrum_rows(values: Sequence[float]) -> list[dict[str, float]]:
    """Singular values as DVC plot rows `{"k": 1.., "sigma": s_k}`."""
    return [{"k": k, "sigma": float(s)} for k, s in enumerate(values, start=1)]


def wrong_rows(wrong: dict[str, list[int]]) -> list[dict[str, int]]:
    """Test errors per digit, one row per digit and a column per model (`{"digit": 0, "base": 20, "lora": 28}`): what
    dvc.yaml's top-level plot draws, one line per model. Not a PNG: matplotlib would cost each LoRA experiment 1.5 s."""
    digits = range(len(next(iter(wrong.values()))))
    return [{"digit": d, **{name: counts[d] for name, counts in wrong.items()}} for d in digits]


def write_spectra_png(path: str | Path, spectra: dict[str, dict[str, list[float]]]) -> None:
    """Singular values of each layer's update (one panel per layer, one line per method) on a log axis."""
    fig = _figure(figsize=(4 * len(spectra), 3.2), dpi=100)
    axes = fig.subplots(1, len(spectra), squeeze=False)
    for ax, (layer, series) in zip(axes[0], spectra.items()):
        for name, values in series.items():
            ax.semilogy(range(1, len(values) + 1), [max(v, 1e-12) for v in values], marker=".", label=name)
        ax.set_title(f"{layer}: singular values of dW")
        ax.set_xlabel("k")
        ax.legend()
    fig.tight_layout()
    _save_png(fig, path)


def write_zoo_heatmap(path: str | Path, wrong: dict[str, list[int]], own: dict[str, list[int]]) -> None:
    """Each model's test errors per digit minus the base model's (rows: adapters, then the two compositions), as a
    PNG heatmap, red where errors rose and blue where they fell, each cell annotated; `own` (row -> digits) names
    the digits each row was trained for, outlined."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    rows = [name for name in wrong if name != "base"]
    change = [[w - b for w, b in zip(wrong[name], wrong["base"], strict=True)] for name in rows]
    bound = max(1, max(abs(v) for row in change for v in row))
    fig = _figure(figsize=(7.5, 0.42 * len(rows) + 1.6), dpi=100)
    ax = fig.subplots()
    image = ax.imshow(change, cmap="RdBu_r", norm=TwoSlopeNorm(0, -bound, bound), aspect="auto")
    for i, (name, row) in enumerate(zip(rows, change, strict=True)):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:+d}" if value else "0", ha="center", va="center", fontsize=7,
                    color="white" if abs(value) > 0.6 * bound else "black")
        for j in own[name]:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, linewidth=1.5))
    ax.set_xticks(range(10))
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("true digit (test set)")
    ax.set_title("Change in test errors vs the base model (outlined: the digits trained for)", fontsize=10)
    fig.colorbar(image, ax=ax, label="errors - base errors")
    fig.tight_layout()
    _save_png(fig, path)


def _figure(**kwargs):
    """A bare matplotlib Figure: no pyplot (global state, GUI backends, 0.3 s more import), imported on demand."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save_png(fig, path: str | Path) -> None:
    """Save a figure atomically with no version string in it, so the bytes depend only on the data."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})  # png: matplotlib renders it with Agg
