"""Multi-seed sweeps: the grid of DVC experiments, and means with 95 % intervals over seeds (pandas).

The interval is Student's t for a mean: half-width t(0.975, n - 1) * s / sqrt(n), s the sample standard
deviation over the n runs of a setting. t, not the normal 1.96, because n is small (15 runs: 3 pretraining
seeds x 5 fine-tuning seeds). The runs are treated as independent draws; runs that share a pretrained model
are correlated, so the interval is, if anything, too narrow: read a difference as real only when the
intervals do not overlap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

LINEAR3_OUT = 10  # the largest rank that linear3 (2000 -> 10) allows: larger ranks skip that layer
METRICS = {"accuracy": "acc", "target_wrong": "wrong", "others_accuracy": "others"}  # csv name -> headline prefix
# t(0.975, df) for df = 1..30 (standard tables); past 30 the normal quantile is within 2 % of it.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


@dataclass(frozen=True)
class Grid:
    """Seeds and settings a sweep covers; every combination is one DVC experiment."""

    pretrain_seeds: tuple[int, ...]
    finetune_seeds: tuple[int, ...]
    ranks: tuple[int, ...]
    replays: tuple[float, ...]


FULL = Grid(pretrain_seeds=(0, 1, 2), finetune_seeds=(0, 1, 2, 3, 4), ranks=(1, 4, 16), replays=(0.0, 0.1))
QUICK = Grid(pretrain_seeds=(0, 1), finetune_seeds=(0, 1), ranks=(1, 4), replays=(0.0,))


def targets_for(rank: int) -> list[str]:
    """The layers LoRA targets at this rank: all three, or linear1 and linear2 above linear3's 10 outputs."""
    return ["linear1", "linear2", "linear3"] if rank <= LINEAR3_OUT else ["linear1", "linear2"]


def queue_batches(grid: Grid) -> list[list[str]]:
    """`dvc exp run --queue` argument lists (comma lists DVC expands into their product), one per targets set."""
    batches = []
    for targets, ranks in itertools.groupby(sorted(grid.ranks), key=lambda r: tuple(targets_for(r))):
        def values(xs: Iterable) -> str:
            return ",".join(str(x) for x in xs)

        batches.append([
            "-S", f"pretrain.seed={values(grid.pretrain_seeds)}", "-S", f"finetune.seed={values(grid.finetune_seeds)}",
            "-S", f"lora.rank={values(ranks)}", "-S", f"finetune.replay={values(grid.replays)}",
            "-S", f"lora.targets=[{','.join(targets)}]",
        ])
    return batches


def runs_table(experiments: list[dict]) -> pd.DataFrame:
    """One row per finished experiment (its seeds, rank, replay and headline metrics) from dvc.api.exp_show()
    records; the newest run of a repeated setting wins, runs without results are dropped."""
    df = pd.DataFrame(experiments)
    needed = ["acc_lora", "acc_full", "acc_base", "pretrain.seed", "finetune.seed", "lora.rank", "finetune.replay"]
    if df.empty or not set(needed) <= set(df.columns):
        return pd.DataFrame(columns=["pretrain_seed", "finetune_seed", "rank", "replay", "method", *METRICS])
    df = df.dropna(subset=needed)
    df = df[df["rev"] != "workspace"]  # the workspace repeats one of the experiments
    keys = ["pretrain.seed", "finetune.seed", "lora.rank", "finetune.replay"]
    df = df.sort_values("Created", ascending=False, na_position="last").drop_duplicates(keys)
    # The pretrained model alone: one run per pretraining seed (fine-tuning settings do not change it).
    base = df.drop_duplicates(["pretrain.seed"])
    rows = [pd.DataFrame({
        "pretrain_seed": base["pretrain.seed"].astype(int), "finetune_seed": pd.NA, "rank": pd.NA, "replay": pd.NA,
        "method": "base", **{name: base[f"{prefix}_base"].astype(float) for name, prefix in METRICS.items()},
    })]
    for method in ("lora", "full"):
        part = pd.DataFrame({
            "pretrain_seed": df["pretrain.seed"].astype(int), "finetune_seed": df["finetune.seed"].astype(int),
            "rank": df["lora.rank"].astype(int) if method == "lora" else pd.NA,
            "replay": df["finetune.replay"].astype(float), "method": method,
            **{name: df[f"{prefix}_{method}"].astype(float) for name, prefix in METRICS.items()},
        })
        if method == "full":  # full fine-tuning does not depend on the rank: one run per seeds and replay
            part = part.drop_duplicates(["pretrain_seed", "finetune_seed", "replay"])
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


def t975(df: int) -> float:
    """Student's t quantile 0.975 with `df` degrees of freedom (nan for df < 1)."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.960 + 2.4 / df  # the tail's first-order expansion


def mean_ci95(values: pd.Series) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t interval (nan with fewer than two values)."""
    values = values.dropna().astype(float)
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    if n == 1:
        return float(values.iloc[0]), math.nan
    return float(values.mean()), t975(n - 1) * float(values.std(ddof=1)) / math.sqrt(n)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (method base, lora or full; rank; replay): n and `<metric>_mean`, `<metric>_ci95`."""
    rows = []
    for (method, rank, replay), group in runs.groupby(["method", "rank", "replay"], dropna=False, sort=True):
        row = {"rank": rank, "replay": replay, "method": method, "n": len(group)}
        for name in METRICS:
            row[f"{name}_mean"], row[f"{name}_ci95"] = mean_ci95(group[name])
        rows.append(row)
    columns = ["rank", "replay", "method", "n", *(f"{m}_{s}" for m in METRICS for s in ("mean", "ci95"))]
    table = pd.DataFrame(rows, columns=columns)
    table["rank"] = table["rank"].astype("Int64")
    order = table["method"].map({"base": 0, "lora": 1, "full": 2})
    return table.assign(_o=order).sort_values(["_o", "replay", "rank"], ignore_index=True).drop(columns="_o")


def separated(a: pd.Series, b: pd.Series, metric: str) -> bool:
    """Do two settings' 95 % intervals of `metric` not overlap (a difference the sweep supports)?"""
    lo_a, hi_a = a[f"{metric}_mean"] - a[f"{metric}_ci95"], a[f"{metric}_mean"] + a[f"{metric}_ci95"]
    lo_b, hi_b = b[f"{metric}_mean"] - b[f"{metric}_ci95"], b[f"{metric}_mean"] + b[f"{metric}_ci95"]
    return bool(hi_a < lo_b or hi_b < lo_a)
