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

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
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
    with atomic_path(out_dir / "wrong_per_digit.png") as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})  # no version string: stable bytes
    plt.close(fig)

