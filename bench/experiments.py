"""Time DVC experiments against a notebook user re-running the seed's cells: bench/README.md ("make bench-exp")."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORKDIR = Path("/tmp/benchexp")  # scratch: the clone (WORKDIR/repo) and the logs (WORKDIR/logs)
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}  # venv 1st
# Ranks <= 10 (linear3 has 10 outputs); HEAD runs 1; the revisit needs one not the workspace's: two new at least.
NEW_RANKS, QUICK_NEW_RANKS, QUEUE_RANKS = (2, 3, 5), (2, 3), (4, 6, 7, 8)
QUEUE_JOBS, QUEUE_ENV = 2, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # 2 OpenMP threads per worker wait
REPEAT = {"peer": (5, 2), "import_torch": (3, 1), "noop_exp_run": (3, 1)}  # (full run, --quick)
QUIET_CPUS = 0.3  # other processes' CPUs, sampled before and after a timed command, that flag it as disturbed
TARGETS = {"new_vs_peer": 1.0, "revisit_vs_new": 0.2, "queue_parallel_vs_new": 2.5}
STAGE_RUN = re.compile(r"Running stage '([^']+)'")
STAGE_LINE = re.compile(r"Running stage '([^']+)'|Stage '([^']+)' (?:is cached|didn't change)")


def out_of(cmd: list[str], cwd: Path) -> str:
    """Stdout of a short command (empty on failure)."""
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def busy_cpus(seconds: float = 1.0) -> float:
    """CPUs' worth of work all processes did over `seconds` (/proc/stat): ~0 on a quiet machine."""
    def ticks() -> tuple[int, int]:  # all, idle + iowait
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(f), f[3] + f[4]
    (t0, i0), _, (t1, i1) = ticks(), time.sleep(seconds), ticks()
    return round((1 - (i1 - i0) / max(t1 - t0, 1)) * (os.cpu_count() or 1), 2)


def run(cmd: list[str], cwd: Path, log: Path) -> dict:
    """Run `cmd` into `log` (exit on failure): wall time, busy_cpus before or after, DVC stages run (s), restored."""
    before = busy_cpus(2.0)  # one sample, no waiting: a measurement on a busy machine is flagged, not delayed
    marks, t0 = [], time.perf_counter()
    with log.open("w") as f, subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:  # type: ignore[union-attr]
            f.write(line)
            if m := STAGE_LINE.search(line):
                marks.append((m.group(1) or m.group(2), time.perf_counter() - t0))
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    output, ends = log.read_text(), [t for _, t in marks[1:]] + [wall]
    ran = STAGE_RUN.findall(output)
    return {"wall_s": round(wall, 2), "busy_cpus": max(before, busy_cpus()), "stages_run": ran,
            "stages_restored": re.findall(r"Stage '([^']+)' is cached - skipping run", output),
            # a stage's seconds: from its announcement to the next one's (the last one's: to the command's end)
            "stage_s": {name: round(end - t, 2) for (name, t), end in zip(marks, ends) if name in ran}}


def summary(runs: list[dict], key: str = "wall_s") -> dict:
    """Median, min, max and the runs of `key`, rounded to 0.01 s, and the most busy_cpus any saw."""
    v = [r[key] for r in runs]
    return {"median_s": round(statistics.median(v), 2), "min_s": round(min(v), 2), "max_s": round(max(v), 2),
            "n": len(v), "runs_s": [round(x, 2) for x in v], "busy_cpus": max(r.get("busy_cpus", 0) for r in runs)}


def prepare(repo: Path, logs: Path, cache: Path) -> tuple[dict, dict]:
    """Clone HEAD, copy `cache`'s objects (not its run cache: every rank is new), check out; setup and machine."""
    shutil.rmtree(WORKDIR, ignore_errors=True)
    logs.mkdir(parents=True)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    shutil.copytree(cache / "files", repo / ".dvc" / "cache" / "files")  # read-only objects stay read-only
    subprocess.run(["dvc", "checkout", "--quiet"], cwd=repo, env=ENV)
    status = out_of(["dvc", "status"], repo)
    subprocess.run(["python", "-c", "import torch, torchvision"], env=ENV)  # warm the page cache: cold, 23 s here
    setup = {"head": out_of(["git", "log", "-1", "--format=%H %s"], repo), "status_before": status,
             "repro_needed": "up to date" not in status}
    if setup["repro_needed"]:  # HEAD's dvc.lock does not match its code: (a) would time more than an experiment
        print(f"  dvc status not clean ({status.splitlines()[:3]}): running dvc repro once, untimed", flush=True)
        setup["repro_untimed_s"] = run(["dvc", "repro"], repo, logs / "repro.log")["wall_s"]
    out, probe = repo / "models" / "pretrained.safetensors", repo / ".dvc" / "tmp" / "reflink-probe"
    reflink = not subprocess.run(["cp", "--reflink=always", out, probe], capture_output=True).returncode  # else copy
    link = "symlink" if out.is_symlink() else "hardlink" if out.stat().st_nlink > 1 else ("copy", "reflink")[reflink]
    cpu = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
    config = out_of(["dvc", "config", "cache.type"], repo) or "unset (default: reflink,copy)"
    return setup, {"cpu": (cpu or ["unknown"])[0], "cores": os.cpu_count(), "dvc": out_of(["dvc", "--version"], repo),
                   "python": sys.version.split()[0], "cache_type": {"config": config, "effective": link}}


def exp_run(repo: Path, log: Path, rank: int) -> dict:
    """(a) or (b): `dvc exp run -S lora.rank=<rank>` in the clone's workspace."""
    r = run(["dvc", "exp", "run", "-S", f"lora.rank={rank}"], repo, log) | {"rank": rank}
    r["restored_from_run_cache"] = not r["stages_run"] and bool(r["stages_restored"])
    print(f"{log.stem}: {r['wall_s']:.1f} s, ran {r['stages_run']}, restored {r['stages_restored']}", flush=True)
    return r


def queue(repo: Path, logs: Path) -> dict:
    """(c): queue QUEUE_RANKS, `dvc exp run --run-all -j QUEUE_JOBS`; seconds until all are refs, until it returns."""
    def refs() -> int:  # experiment refs (refs/exps/<baseline sha>/<name>): one per collected experiment
        return len(re.findall(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/", out_of(["git", "for-each-ref"], repo)))
    n, ranks = len(QUEUE_RANKS), ",".join(map(str, QUEUE_RANKS))
    try:  # a comma list: one queued experiment per rank
        subprocess.run(["dvc", "exp", "run", "--queue", "-S", f"lora.rank={ranks}"], cwd=repo, env=ENV, check=True)
        print(f"(c) {n} queued: dvc exp run --run-all -j {QUEUE_JOBS} with {QUEUE_ENV} ...", flush=True)
        busy, before, results_s, t0 = busy_cpus(2.0), refs(), None, time.perf_counter()
        with (logs / "queue.log").open("w") as f:  # it starts the workers (as `dvc queue start` does), follows them
            proc = subprocess.Popen(["dvc", "exp", "run", "--run-all", "--jobs", str(QUEUE_JOBS)], cwd=repo,
                                    env={**ENV, **QUEUE_ENV}, stdout=f, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                if results_s is None and refs() - before >= n:
                    results_s = time.perf_counter() - t0
                time.sleep(0.25)
        return_s, done, busy = time.perf_counter() - t0, refs() - before, max(busy, busy_cpus())
    finally:  # the workers run detached, and `--run-all` leaves them idle: stop them (killing any task left)
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, env=ENV, capture_output=True)
    results_s = results_s or return_s
    print(f"    all {n} results after {results_s:.1f} s; --run-all returned after {return_s:.1f} s", flush=True)
    return {"jobs": QUEUE_JOBS, "env": QUEUE_ENV, "ranks": list(QUEUE_RANKS),
            "wall_s": round(results_s, 2), "run_all_return_s": round(return_s, 2), "busy_cpus": busy,
            "per_experiment_s": round(results_s / n, 2), "failed": bool(proc.returncode) or done < n}


def peer_worker(out: Path, repeat: int, ranks: list[int]) -> None:
    """(d), run in the clone: one untimed data load, then `repeat` timed re-runs of the seed's cells; write JSON."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(BENCH))
    import seed_procedure as seed  # the seed's classes, train() and test()
    import torch
    import torch.nn.utils.parametrize as parametrize
    from safetensors.torch import load_file
    from torchvision import datasets, transforms
    import_s = time.perf_counter() - t0
    digit = json.loads(Path("metrics/select_target.json").read_text())["target"]["digit"]
    t0 = time.perf_counter()
    _ = torch.manual_seed(0)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    testset = datasets.MNIST(root="data/raw", train=False, download=False, transform=transform)
    test_loader = torch.utils.data.DataLoader(testset, batch_size=10, shuffle=True)
    trainset = datasets.MNIST(root="data/raw", train=True, download=False, transform=transform)
    keep = trainset.targets == digit
    trainset.data, trainset.targets = trainset.data[keep], trainset.targets[keep]
    train_loader = torch.utils.data.DataLoader(trainset, batch_size=10, shuffle=True)
    first_load_s, reps = time.perf_counter() - t0, []
    for i in range(repeat):
        rank = ranks[i % len(ranks)]
        t0 = time.perf_counter()
        net = seed.RichBoyNet().to(seed.device)  # the cells re-run for a new rank start here
        net.load_state_dict(load_file("models/pretrained.safetensors"))
        original = {k: v.clone().detach() for k, v in net.named_parameters()}
        for layer in (net.linear1, net.linear2, net.linear3):
            parametrize.register_parametrization(layer, "weight",
                                                 seed.linear_layer_parameterization(layer, seed.device, rank=rank))
        for name, param in net.named_parameters():
            if "lora" not in name:
                param.requires_grad = False
        t1 = time.perf_counter()
        seed.train(train_loader, net, epochs=1, total_iterations_limit=100)
        for name in ("linear1", "linear2", "linear3"):
            assert torch.equal(getattr(net, name).parametrizations.weight.original, original[f"{name}.weight"])
        t2 = time.perf_counter()
        accuracy, wrong = seed.test(net, test_loader)
        t3 = time.perf_counter()
        reps.append({"rank": rank, "total_s": round(t3 - t0, 3), "setup_s": round(t1 - t0, 3),
                     "finetune_s": round(t2 - t1, 3), "test_s": round(t3 - t2, 3),
                     "accuracy": accuracy, "target_wrong": wrong[digit]})
        print(f"peer rep {i + 1}/{repeat}: rank {rank} {t3 - t0:.2f} s", flush=True)
    result = {"reps": reps, "import_s": round(import_s, 2), "first_load_s": round(first_load_s, 2), "digit": digit,
              "device": seed.device, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    out.write_text(json.dumps(result, indent=2) + "\n")


def table(res: dict) -> str:
    """The markdown table printed at the end (pasted into bench/README.md); † marks a disturbed measurement."""
    rev, fl, q = res["revisit"], res["floor"], res["queue"]["parallel"]
    r = {k: f"**{v['ratio']:.2f}** (target <= {v['target']}: {'met' if v['met'] else 'NOT met'})"
         for k, v in res["ratios"].items()}
    def fmt(s: dict) -> str:  # '12.3 s (11.9-13.0, n=3)' from a summary(), '5.2 s' from one run
        spread = f" ({s['min_s']:.1f}-{s['max_s']:.1f}, n={s['n']})" if s.get("n", 1) > 1 else ""
        return f"{s.get('median_s') or s['wall_s']:.1f} s{spread}{' †' if s['busy_cpus'] >= QUIET_CPUS else ''}"
    how = "restored, no stage ran" if rev["restored_from_run_cache"] else f"re-ran {len(rev['stages_run'])} stages"
    rows = [("(d) peer: the seed's cells re-run in a warm notebook process", fmt(res["peer"]), "-"),
            ("(a) new experiment `dvc exp run -S lora.rank=N`", fmt(res["new"]), f"(a)/peer {r['new_vs_peer']}"),
            (f"(b) revisited `dvc exp run -S lora.rank={rev['rank']}` ({how})", fmt(rev),
             f"(b)/(a) {r['revisit_vs_new']}"),
            (f"(c) {len(q['ranks'])} queued, `-j {q['jobs']}` " + " ".join(f"{k}={v}" for k, v in q["env"].items()),
             f"{fmt(q)} ({q['per_experiment_s']:.1f} s each; `--run-all` returns at {q['run_all_return_s']:.1f} s)",
             f"(c)/(a) {r['queue_parallel_vs_new']}"),
            ("floor: `python -c \"import torch\"` / no-op `dvc exp run`",
             f"{fmt(fl['import_torch'])} / {fmt(fl['noop_exp_run'])}", "-")]
    lines = ["| measurement | wall time | ratio |", "| --- | --- | --- |", *(f"| {' | '.join(x)} |" for x in rows)]
    if res["disturbed"]:
        lines.append(f"\n† other processes used >= {QUIET_CPUS} CPUs just before or after it: inflated, measure again.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run, ~5 min on 2 cores)")
    parser.add_argument("--out", type=Path, default=BENCH / "experiments.json", help="where to write the JSON")
    parser.add_argument("--cache", type=Path, default=ROOT / ".dvc" / "cache", help="DVC cache to copy objects from")
    parser.add_argument("--peer-worker", nargs=2, metavar=("REPEAT", "RANKS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_worker:
        return peer_worker(args.out, int(args.peer_worker[0]), [int(r) for r in args.peer_worker[1].split(",")])
    repo, logs, n = WORKDIR / "repo", WORKDIR / "logs", {k: v[args.quick] for k, v in REPEAT.items()}
    ranks, t_start = QUICK_NEW_RANKS if args.quick else NEW_RANKS, time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # so that queue() stops the queue workers
    res: dict = {"quick": args.quick, "busy_cpus_at_start": busy_cpus(2.0)}
    print(f"setup: git clone {ROOT} {repo}; copy {args.cache}'s objects; dvc checkout (untimed) ...", flush=True)
    res["setup"], m = prepare(repo, logs, args.cache)
    res["machine"] = m
    floor = {name: [run(cmd, repo, logs / f"{name}_{i}.log") for i in range(n[name])] for name, cmd in
             (("import_torch", ["python", "-c", "import torch"]), ("noop_exp_run", ["dvc", "exp", "run"]))}
    if any(r["stages_run"] for r in floor["noop_exp_run"]):
        raise SystemExit(f"the no-op dvc exp run ran a stage (dvc status not clean?); see {logs}/noop_exp_run_*.log")
    res["floor"] = {name: summary(rs) for name, rs in floor.items()}
    runs = [exp_run(repo, logs / f"new_rank{r}.log", r) for r in ranks]  # (a)
    res["new"] = {"ranks": list(ranks), **summary(runs), "runs": runs}
    rev = res["revisit"] = exp_run(repo, logs / f"revisit_rank{ranks[0]}.log", ranks[0])  # (b)
    print(f"(d) peer: the seed's cells re-run {n['peer']}x in one warm Python process ...", flush=True)
    busy = run([sys.executable, str(BENCH / "experiments.py"), "--out", str(logs / "peer.json"), "--peer-worker",
                str(n["peer"]), ",".join(map(str, ranks))], repo, logs / "peer.log")["busy_cpus"]
    res["peer"] = json.loads((logs / "peer.json").read_text())
    res["peer"].update(summary(res["peer"]["reps"], "total_s"), busy_cpus=busy)
    # (c) last: its workers outlive `--run-all` (stopped, they take seconds to exit). `-j 1` dropped in issue #27.
    q = res["queue"] = {"parallel": queue(repo, logs)}
    m["torch"], new = res["peer"]["torch"], res["new"]["median_s"]
    values = {"new_vs_peer": new / res["peer"]["median_s"], "revisit_vs_new": rev["wall_s"] / new,
              "queue_parallel_vs_new": q["parallel"]["wall_s"] / new}
    res["ratios"] = {k: {"ratio": round(v, 3), "target": TARGETS[k], "met": v <= TARGETS[k]} for k, v in values.items()}
    parts = {"peer": res["peer"], "new": res["new"], "revisit": rev, **res["floor"], "queue_parallel": q["parallel"]}
    res["disturbed"] = [k for k, v in parts.items() if v["busy_cpus"] >= QUIET_CPUS]
    res.update(total_s=round(time.perf_counter() - t_start, 1), logs=str(logs),
               load_at_end=[round(x, 2) for x in os.getloadavg()])  # 1/5/15-min load: ~our own run alone
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\n{m['cpu']}, {m['cores']} cores, torch {m['torch']}, dvc {m['dvc']}, cache.type "
          f"{m['cache_type']['config']} -> {m['cache_type']['effective']}{' (quick smoke run)' * args.quick}\n")
    print(table(res) + f"\n\nwrote {args.out} ({res['total_s']:.0f} s in all; logs in {logs})")


if __name__ == "__main__":
    main()
