"""`make sweep`: LoRA ranks x replay over several pretraining and fine-tuning seeds, as DVC experiments.

On this machine, through DVC's queue with one worker per core, each on one thread (no oversubscription; results
are bit-identical whatever the thread count), restoring everything already computed from DVC's run cache. With
--scheduler (`make sweep SCHEDULER=tcp://host:8786`), as Dask tasks on the workers connected to that scheduler, each
in its own clone, shared through `origin` and the default DVC remote (lora_mnist.sweep.cluster, docs/scale.md).
Writes experiments/sweep.csv (mean and 95 % interval per setting, see lora_mnist.sweep.grid), sweep_runs.csv
(every run) and sweep.png (error bars), the same either way. --quick: 2 x 2 seeds, ranks 1 and 4, no replay.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

from lora_mnist.sweep.grid import FULL, METRICS, QUICK, Grid, aggregate, queue_batches, runs_table  # noqa: E402


def dvc(*args: str, env: dict[str, str] | None = None) -> None:
    """Run a dvc command in the project root; on failure show dvc's error and exit."""
    proc = subprocess.run(["dvc", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: dvc {' '.join(args)} failed:\n{proc.stderr.strip() or proc.stdout.strip()}")


def run_grid(grid: Grid, jobs: int, anchors: bool = True) -> None:
    """Queue the grid and run it; with `anchors`, one run per pretraining seed first, so that two workers never
    train the same new pretrained model at once (each pretraining is 2-3 min on one thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}
    first = Grid(grid.pretrain_seeds, grid.finetune_seeds[:1], sorted(grid.ranks)[:1], grid.replays[:1])
    phases = [("pretraining seeds", queue_batches(first))] if anchors else []
    for phase, batches in (*phases, ("the grid", queue_batches(grid))):
        for args in batches:
            dvc("exp", "run", "--queue", *args)
        start = time.perf_counter()
        print(f"running {phase} with {jobs} workers...", flush=True)
        # Settings already run are restored from the run cache; a failed one is reported and left out.
        subprocess.run(["dvc", "exp", "run", "--run-all", "--jobs", str(jobs)], cwd=ROOT, env=env, check=False)
        print(f"  {time.perf_counter() - start:.0f} s", flush=True)


def plot(table, path: Path) -> None:
    """Each metric against rank with 95 % error bars, one line per replay; full fine-tuning as a band."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.4), dpi=100)
    axes = fig.subplots(1, len(METRICS))
    lora, full, base = (table[table["method"] == m] for m in ("lora", "full", "base"))
    for ax, (name, _) in zip(axes, METRICS.items()):
        for replay, part in lora.groupby("replay"):
            ax.errorbar(part["rank"].astype(int), part[f"{name}_mean"], yerr=part[f"{name}_ci95"], marker="o",
                        capsize=3, label=f"LoRA, replay {replay:g} (n={part['n'].min()})")
        for replay, part in full.groupby("replay"):
            mean, ci = part[f"{name}_mean"].iloc[0], part[f"{name}_ci95"].iloc[0]
            style = "--" if replay == 0 else ":"
            ax.axhspan(mean - ci, mean + ci, alpha=0.12, color="grey")
            ax.axhline(mean, linestyle=style, color="grey", label=f"all weights, replay {replay:g}")
        if len(base):
            ax.axhline(base[f"{name}_mean"].iloc[0], color="black", linewidth=0.8, label="pretrained (base)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(lora["rank"].astype(int).unique()), [str(r) for r in sorted(lora["rank"].astype(int).unique())])
        ax.set_xlabel("LoRA rank")
        ax.set_title(name.replace("_", " ") + " (mean, 95 % CI)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    tmp.replace(path)


def write_csv(frame, path: Path) -> None:
    """Write a DataFrame as CSV atomically."""
    tmp = path.with_name(f".tmp-{path.name}")
    frame.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 x 2 seeds, ranks 1 and 4, no replay")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel workers (default: cores)")
    parser.add_argument("--report-only", action="store_true", help="tabulate the experiments already run")
    parser.add_argument("--no-anchors", action="store_true", help="skip the first pass that trains each pretraining "
                        "seed once (worth it when pretraining is cheap)")
    parser.add_argument("--out", type=Path, default=HERE, help="where the CSVs and the plot go")
    parser.add_argument("--scheduler", default="", help="a Dask scheduler's address (tcp://host:8786): run the "
                        "experiments on its workers (docs/scale.md); empty: on this machine")
    parser.add_argument("--connect-timeout", type=float, default=20.0, help="seconds to wait for the scheduler, "
                        "then for a worker (default 20)")
    for field, kind in (("pretrain_seeds", int), ("finetune_seeds", int), ("ranks", int), ("replays", float)):
        parser.add_argument("--" + field.replace("_", "-"), type=lambda v, k=kind: tuple(k(x) for x in v.split(",")),
                            help=f"comma list replacing the grid's {field.replace('_', ' ')}")
    args = parser.parse_args()
    grid = QUICK if args.quick else FULL
    grid = Grid(**{f: getattr(args, f) or getattr(grid, f) for f in ("pretrain_seeds", "finetune_seeds", "ranks", "replays")})
    if args.scheduler and not args.report_only:
        from lora_mnist.cli import LoraMnistError
        from lora_mnist.sweep.cluster import run_sweep

        try:
            run_sweep(ROOT, args.scheduler, grid, anchors=not args.no_anchors, timeout=args.connect_timeout)
        except LoraMnistError as exc:
            sys.exit(f"error: {exc}")
    elif not args.report_only:
        run_grid(grid, args.jobs, anchors=not args.no_anchors)

    import dvc.api

    runs = runs_table(dvc.api.exp_show(repo=str(ROOT)))
    base = runs["method"] == "base"
    runs = runs[runs["pretrain_seed"].isin(grid.pretrain_seeds) & (base | (
        runs["finetune_seed"].isin(grid.finetune_seeds) & runs["replay"].isin(grid.replays)
        & (runs["rank"].isin(grid.ranks) | (runs["method"] == "full"))))]
    table = aggregate(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(runs, args.out / "sweep_runs.csv")
    write_csv(table, args.out / "sweep.csv")
    plot(table, args.out / "sweep.png")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
