"""The data files DVC renders as plots (TSV/JSON rows), each written atomically; the PNGs are in figures.py.

Written directly, not through DVCLive: the stages log one series after training, and DVCLive's import
(1.3-1.5 s with pandas) cost more than the pipeline's slowest DVC-only step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lora_mnist.artifacts import write_bytes, write_json


def write_losses(path: str | Path, losses: Sequence[float]) -> None:
    """Per-step training loss as TSV (`step`, `loss`); repr() keeps every float32 bit of each value."""
    lines = ["step\tloss", *(f"{step}\t{loss!r}" for step, loss in enumerate(losses))]
    write_bytes(path, ("\n".join(lines) + "\n").encode())


def write_confusion(path: str | Path, labels: Sequence[int], predictions: Sequence[int]) -> None:
    """One row per test image, `{"actual", "predicted"}`: what DVC's confusion template counts."""
    write_json(path, [{"actual": int(a), "predicted": int(p)} for a, p in zip(labels, predictions, strict=True)])


def spectrum_rows(values: Sequence[float]) -> list[dict[str, float]]:
    """Singular values as DVC plot rows `{"k": 1.., "sigma": s_k}`."""
    return [{"k": k, "sigma": float(s)} for k, s in enumerate(values, start=1)]
