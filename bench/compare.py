"""Race the pipeline against the seed's procedure on this machine; write bench/results.json (`make bench`).

Times, in one run and one after the other (never concurrently):
- the peer: `python bench/seed_procedure.py --data data/raw` (the seed's procedure, from import to last test);
- ours: `dvc repro -f --downstream pretrain` (every stage after download, forced), with each stage's wall
  time read from when dvc announces it (`Running stage '...'`), so a stage's time includes its Python
  start-up, imports and dvc's own hashing/caching of its outputs;
- a no-op `dvc repro` (everything up to date: what `dvc exp run` pays before deciding there is nothing to do).
The ratio is over every stage after download, as issue 5 defines it; the sum over the stages that do the
seed's own work (SEED_STAGES) is reported beside it.

Run from the repository root with the venv first on PATH (`make bench` does both). `--repeat N` runs the
race N times, alternating sides, and reports medians. Wall times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"  # logs of the last run (git-ignored)
RESULTS = BENCH / "results.json"
TARGET_RATIO = 0.25  # issue 5: the pipeline in at most a quarter of the peer's time
# The stages that do what the seed's procedure does (the rest, e.g. finetune_full and analyze, go beyond it).
SEED_STAGES = ("pretrain", "snapshot", "select_target", "filter", "finetune", "verify", "evaluate")
STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def pipeline_device() -> str:
    """The `device` param of params.yaml, so that the peer races on the same device as the pipeline."""
    import yaml

    device = str(yaml.safe_load((ROOT / "params.yaml").read_text()).get("device", "cpu"))
    return device if device in ("auto", "cpu", "cuda") else "cpu"


def run_peer(log: Path, device: str) -> dict:
    """Run the seed's procedure once; its own JSON plus the wall time seen from here."""
    out = OUT / "peer.json"
    cmd = [sys.executable, str(BENCH / "seed_procedure.py"), "--data", "data/raw", "--json", str(out), "--device", device]
    t0 = time.perf_counter()
    with log.open("w") as f:
        subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, **json.loads(out.read_text())}


def run_dvc(args: list[str], log: Path) -> tuple[float, dict[str, float]]:
    """Run `dvc <args>`; total wall time and, per stage, the time from its announcement to the next one."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(["dvc", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        for line in proc.stdout:  # type: ignore[union-attr]
            f.write(line)
            m = STAGE_LINE.search(line)
            if m:
                marks.append((m.group(1), time.perf_counter()))
        rc = proc.wait()
    end = time.perf_counter()
    if rc:
        raise SystemExit(f"dvc {' '.join(args)} failed (exit {rc}); see {log}")
    stages = {name: (marks[i + 1][1] if i + 1 < len(marks) else end) - t for i, (name, t) in enumerate(marks)}
    return end - t0, stages


def our_accuracy() -> dict:
    ev = json.loads((ROOT / "metrics" / "evaluate.json").read_text())
    return {"digit": ev["target"]["digit"], "before": ev["accuracy"]["base"], "after": ev["accuracy"]["lora"],
            "target_wrong_before": ev["target"]["wrong_base"], "target_wrong_after": ev["target"]["wrong_lora"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="races to run (medians are reported)")
    parser.add_argument("--noop-repeat", type=int, default=3, help="no-op `dvc repro` runs (median)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if not (ROOT / "data" / "raw" / "MNIST" / "raw").is_dir():
        print("data/raw missing: running the download stage first (not timed)", flush=True)
        subprocess.run(["dvc", "repro", "download"], cwd=ROOT, check=True)

    device = pipeline_device()
    peers, ours = [], []
    for i in range(args.repeat):
        print(f"[{i + 1}/{args.repeat}] peer: bench/seed_procedure.py --device {device} ...", flush=True)
        peers.append(run_peer(OUT / "peer.log", device))
        print(f"  {peers[-1]['wall_s']:.1f} s", flush=True)
        print(f"[{i + 1}/{args.repeat}] ours: dvc repro -f --downstream pretrain ...", flush=True)
        total, stages = run_dvc(["repro", "-f", "--downstream", "pretrain"], OUT / "repro.log")
        ours.append({"wall_s": total, "stages_s": stages})
        print(f"  {total:.1f} s", flush=True)
    noop = [run_dvc(["repro"], OUT / "noop.log")[0] for _ in range(args.noop_repeat)]

    med = statistics.median
    peer_s, ours_s = med(p["wall_s"] for p in peers), med(o["wall_s"] for o in ours)
    stage_names = list(ours[-1]["stages_s"])
    seed_s = med(sum(t for k, t in o["stages_s"].items() if k in SEED_STAGES) for o in ours)
    last = peers[-1]
    peer_digit = last["digit"]
    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": last["torch"], "torch_threads": last["threads"], "device": last["device"]},
        "repeat": args.repeat,
        "peer": {
            "wall_s": round(peer_s, 1),
            "phases_s": {k: round(med(p["phases_s"][k] for p in peers), 1) for k in last["phases_s"]},
            "accuracy": {"digit": peer_digit, "before": last["accuracy"]["before"], "after": last["accuracy"]["after"],
                         "target_wrong_before": last["wrong"]["before"][peer_digit],
                         "target_wrong_after": last["wrong"]["after"][peer_digit]},
        },
        "pipeline": {
            "wall_s": round(ours_s, 1),
            "stages_s": {k: round(med(o["stages_s"][k] for o in ours), 1) for k in stage_names},
            "accuracy": our_accuracy(),
        },
        "ratio": round(ours_s / peer_s, 3),
        "seed_stages": {"stages": [k for k in stage_names if k in SEED_STAGES],
                        "wall_s": round(seed_s, 1), "ratio": round(seed_s / peer_s, 3)},
        "speedup": round(peer_s / ours_s, 2),
        "target_ratio": TARGET_RATIO,
        "meets_target": ours_s / peer_s <= TARGET_RATIO,
        "noop_repro_s": round(med(noop), 2),
    }
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")

    pa, oa = results["peer"]["accuracy"], results["pipeline"]["accuracy"]
    print(f"\npeer (seed procedure): {peer_s:7.1f} s   phases: "
          + ", ".join(f"{k} {v}" for k, v in results["peer"]["phases_s"].items()))
    print(f"pipeline (dvc repro):  {ours_s:7.1f} s   stages: "
          + ", ".join(f"{k} {v}" for k, v in results["pipeline"]["stages_s"].items()))
    print(f"ratio pipeline/peer:   {results['ratio']:.3f}  ({results['speedup']}x faster; target <= {TARGET_RATIO}: "
          f"{'met' if results['meets_target'] else 'NOT met'})")
    print(f"seed's stages only:    {seed_s:7.1f} s   ratio {results['seed_stages']['ratio']:.3f} "
          f"({', '.join(results['seed_stages']['stages'])})")
    print(f"no-op dvc repro:       {results['noop_repro_s']:.2f} s")
    for name, a in (("peer", pa), ("pipeline", oa)):
        print(f"{name:9} accuracy {a['before']:.4f} -> {a['after']:.4f}; target digit {a['digit']} wrong "
              f"{a['target_wrong_before']} -> {a['target_wrong_after']}")
    print(f"-> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
