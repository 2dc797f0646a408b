"""What a distributed sweep costs per experiment (make sweep SCHEDULER=...), on 1 and on 2 local workers.

The real parts of the test (tests/cluster.py: a WebDAV DVC remote, a bare git origin, a Dask scheduler, workers in
their own clones, all on 127.0.0.1) around the synthetic project of the end-to-end tests (784 -> 32 -> 16 -> 10 on
400 images: the run phase is small, so the flow's own costs show). For each worker count: one sweep of N fine-tuning
seeds on the committed base model, from a fresh cluster; per experiment the task's phases (fetch, pull, run, push),
its wait between submission and start, and the sweep's wall time. Writes bench/cluster_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from cluster import Cluster  # noqa: E402
from e2e import make_repo  # noqa: E402

from lora_mnist.numerics import cpu_identity  # noqa: E402


def one(workers: int, seeds: int, base: Path) -> dict:
    repo = make_repo(base / "built")
    repo.dvc("repro")
    repo.commit("results")
    cluster = Cluster(repo, base, workers=workers)
    try:
        from distributed import Client

        from lora_mnist.sweep.cluster import run_sweep
        from lora_mnist.sweep.grid import Grid

        with Client(cluster.address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)
        grid = Grid((0,), tuple(range(1, seeds + 1)), (2,), (0.0,))
        start = time.time()
        records = run_sweep(repo.path, cluster.address, grid, anchors=False)
        wall = time.time() - start
    finally:
        cluster.procs.stop_all()
    done = [r for r in records if not r.get("skipped") and "error" not in r]
    phases = {k: statistics.median(r[k] for r in done) for k in ("fetch_s", "pull_s", "run_s", "push_s")}
    return {"workers": workers, "experiments": len(done), "wall_s": round(wall, 1),
            "median_phase_s": {k: round(v, 2) for k, v in phases.items()},
            "task_s_sum": round(sum(r["ended"] - r["started"] for r in done), 1),
            "records": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="experiments per sweep (fine-tuning seeds)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "cluster_sweep.json")
    args = parser.parse_args()
    results = []
    for workers in (1, 2):
        with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
            result = one(workers, args.seeds, Path(tmp))
        print(f"{workers} worker(s): {result['experiments']} experiments in {result['wall_s']} s; median per "
              f"experiment {result['median_phase_s']}", flush=True)
        results.append(result)
    args.out.write_text(json.dumps({"machine": {**cpu_identity(), "python": platform.python_version()},
                                    "seeds": args.seeds, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
