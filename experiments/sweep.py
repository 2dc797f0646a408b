"""`make sweep`: queue LoRA ranks x replay fractions as DVC experiments, run them, tabulate and plot.

Ranks above 10 cannot target linear3 (2000 -> 10), so those run on linear1 and linear2 only.
Writes experiments/sweep.md (the table) and experiments/rank_vs_accuracy.png from `dvc exp show --json`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LINEAR3_OUT = 10  # the largest rank that linear3 (2000 -> 10) allows


def dvc(*args: str) -> str:
    """Run a dvc command in the project root and return its stdout; on failure show dvc's error and exit."""
    proc = subprocess.run(["dvc", *args], cwd=HERE.parent, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: dvc {' '.join(args)} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def collect(exp_show: list[dict]) -> list[dict]:
    """One row per experiment (rank, replay, metrics) from `dvc exp show --json` output."""
    rows = []
    for baseline in exp_show:
        for exp in [baseline] + [e for group in baseline.get("experiments") or [] for e in group["revs"]]:
            data = (exp.get("data") or {})
            params = data.get("params", {}).get("params.yaml", {}).get("data", {})
            metrics = data.get("metrics", {}).get("metrics/evaluate.json", {}).get("data", {})
            if not metrics or exp.get("name") is None:
                continue
            rows.append({
                "name": exp["name"], "rank": params["lora"]["rank"], "replay": params["finetune"].get("replay", 0.0),
                "targets": "+".join(t[-1] for t in params["lora"]["targets"]),
                "accuracy": metrics["accuracy"]["lora"], "target_wrong": metrics["target"]["wrong_lora"],
                "others_accuracy": metrics["forgetting"]["others_accuracy"]["lora"],
                "base_accuracy": metrics["accuracy"]["base"], "base_target_wrong": metrics["target"]["wrong_base"],
                "lora_params": metrics["param_count"]["lora"],
            })
    # keep the newest run of each setting: exp show lists newest first
    unique = {}
    for row in rows:
        unique.setdefault((row["rank"], row["targets"], row["replay"]), row)
    return sorted(unique.values(), key=lambda r: (r["replay"], r["rank"]))


def write_table(rows: list[dict], path: Path) -> None:
    """A Markdown table for the README."""
    lines = ["| rank | layers | replay | LoRA params | accuracy | target wrong | accuracy on other digits |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    if rows:
        r0 = rows[0]
        lines.append(f"| base | - | - | 0 | {r0['base_accuracy']:.4f} | {r0['base_target_wrong']} | - |")
    for r in rows:
        lines.append(f"| {r['rank']} | {r['targets']} | {r['replay']} | {r['lora_params']:,} | {r['accuracy']:.4f} | "
                     f"{r['target_wrong']} | {r['others_accuracy']:.4f} |")
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy and target errors against rank, one line per replay fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, wrong) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    for replay in sorted({r["replay"] for r in rows}):
        sub = [r for r in rows if r["replay"] == replay]
        ranks = [r["rank"] for r in sub]
        acc.plot(ranks, [r["accuracy"] for r in sub], marker="o", label=f"replay {replay}")
        wrong.plot(ranks, [r["target_wrong"] for r in sub], marker="o", label=f"replay {replay}")
    if rows:
        acc.axhline(rows[0]["base_accuracy"], color="grey", linestyle="--", label="base")
        wrong.axhline(rows[0]["base_target_wrong"], color="grey", linestyle="--", label="base")
    for ax, title in ((acc, "test accuracy"), (wrong, "target digit: wrong predictions")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("LoRA rank")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,2,4,8,16")
    parser.add_argument("--replay", default="0.0,0.1")
    parser.add_argument("--report-only", action="store_true", help="skip running; tabulate existing experiments")
    args = parser.parse_args()
    if not args.report_only:
        ranks = [int(r) for r in args.ranks.split(",")]
        small = ",".join(str(r) for r in ranks if r <= LINEAR3_OUT)
        large = ",".join(str(r) for r in ranks if r > LINEAR3_OUT)
        if small:
            dvc("exp", "run", "--queue", "-S", f"lora.rank={small}", "-S", f"finetune.replay={args.replay}")
        if large:
            dvc("exp", "run", "--queue", "-S", f"lora.rank={large}", "-S", f"finetune.replay={args.replay}",
                "-S", "lora.targets=[linear1,linear2]")
        print("queued; running them one at a time (dvc exp run --run-all)...", flush=True)
        if subprocess.run(["dvc", "exp", "run", "--run-all", "--jobs", "1"], cwd=HERE.parent).returncode != 0:
            print("warning: some experiments failed; tabulating those that finished", file=sys.stderr)
    rows = collect(json.loads(dvc("exp", "show", "--json")))
    write_table(rows, HERE / "sweep.md")
    plot(rows, HERE / "rank_vs_accuracy.png")
    print((HERE / "sweep.md").read_text())


if __name__ == "__main__":
    main()
