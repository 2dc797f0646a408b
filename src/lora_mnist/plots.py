"""Plot data DVC renders (DVCLive step losses, confusion pairs, per-digit bars) and a PNG for people."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lora_mnist.artifacts import atomic_dir, atomic_path, write_json

LOSS_NAME = "loss"  # DVCLive writes <dir>/plots/metrics/loss.tsv


def write_losses(out_dir: str | Path, losses: Sequence[float]) -> None:
    """Per-step training loss as a DVCLive plot, written as a whole directory atomically."""
    from dvclive import Live  # imported here: only training stages pay for it

    with atomic_dir(out_dir) as tmp:
        # dvcyaml=False: plots are declared in dvc.yaml; save_dvc_exp=False: DVC runs us, not the reverse.
        # Live writes into a hidden .tmp-* dir (git-ignored), so under `dvc exp run` it has nothing to git-add.
        with Live(str(tmp), dvcyaml=False, save_dvc_exp=False, report=None) as live:
            for step, loss in enumerate(losses):
                live.step = step
                live.log_metric(LOSS_NAME, loss)


def write_confusions(out_dir: Path, labels: Sequence[int], predictions: dict[str, Sequence[int]]) -> None:
    """One DVCLive confusion file per model (`confusion_<name>.json`) inside `out_dir` (already temp)."""
    from dvclive import Live

    with Live(str(out_dir / "dvclive"), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for name, preds in predictions.items():
            live.log_sklearn_plot("confusion_matrix", list(labels), list(preds), name=f"confusion_{name}.json")
    # Flatten DVCLive's plots/sklearn/ layout so dvc.yaml names short, stable paths.
    for path in (out_dir / "dvclive" / "plots" / "sklearn").glob("confusion_*.json"):
        path.rename(out_dir / path.name)
    for leftover in sorted((out_dir / "dvclive").rglob("*"), reverse=True):
        leftover.rmdir() if leftover.is_dir() else leftover.unlink()
    (out_dir / "dvclive").rmdir()


def write_wrong_bars(out_dir: Path, wrong: dict[str, list[int]], target: int) -> None:
    """Per-digit wrong counts as JSON rows, one file per model (DVC bar chart), and as a matplotlib PNG."""
    for name, counts in wrong.items():
        write_json(out_dir / f"wrong_{name}.json", [{"digit": str(d), "wrong": n} for d, n in enumerate(counts)])

    fig = _figure(figsize=(7, 3.5), dpi=100)
    ax = fig.subplots()
    width = 0.8 / len(wrong)
    for i, (name, counts) in enumerate(wrong.items()):
        xs = [d + (i - (len(wrong) - 1) / 2) * width for d in range(10)]
        bars = ax.bar(xs, counts, width, label=name)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(range(10))
    ax.set_xlabel(f"true digit (target: {target})")
    ax.set_ylabel("wrong predictions (test set)")
    ax.set_title("Per-digit errors: base model vs LoRA fine-tuned")
    ax.legend()
    fig.tight_layout()
    _save_png(fig, out_dir / "wrong_per_digit.png")


def _figure(**kwargs):
    """A bare matplotlib Figure: no pyplot (global state, GUI backends, 0.3 s more import), imported on demand."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save_png(fig, path: Path) -> None:
    """Save a figure atomically with no version string in it, so the bytes depend only on the data."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})  # png: matplotlib renders it with Agg


def write_spectra(out_dir: Path, spectra: dict[str, dict[str, list[float]]]) -> None:
    """Singular values per layer: `spectrum_<layer>.json` rows for DVC and one log-scale PNG."""
    for layer, series in spectra.items():
        k = max(len(v) for v in series.values())
        rows = [{"k": i + 1, **{name: (v[i] if i < len(v) else 0.0) for name, v in series.items()}} for i in range(k)]
        write_json(out_dir / f"spectrum_{layer}.json", rows)
    fig = _figure(figsize=(4 * len(spectra), 3.2), dpi=100)
    axes = fig.subplots(1, len(spectra), squeeze=False)
    for ax, (layer, series) in zip(axes[0], spectra.items()):
        for name, values in series.items():
            ax.semilogy(range(1, len(values) + 1), [max(v, 1e-12) for v in values], marker=".", label=name)
        ax.set_title(f"{layer}: singular values of dW")
        ax.set_xlabel("k")
        ax.legend()
    fig.tight_layout()
    _save_png(fig, out_dir / "spectrum.png")
