"""Time DVC experiments against a notebook user re-running the seed's cells; write bench/experiments.json.

`make bench-exp` runs this from the repository root. In one run, on this machine, one thing at a time:
- floor: `python -c "import torch"` and a no-op `dvc exp run` (nothing changed);
- (a) new experiment: `dvc exp run -S lora.rank=N` for ranks never run before (whole command's wall time);
- (b) revisited experiment: `dvc exp run -S lora.rank=<one of (a)'s ranks>`, which DVC can restore from its
  run cache; the output tells whether any stage command ran ("Running stage") or all were restored;
- (c) queued experiments: QUEUE_SIZE `dvc exp run --queue -S lora.rank=K`, then `dvc exp run --run-all -j J`
  (it starts J workers as `dvc queue start -j J` does, then follows their logs), timed from its start until
  every result is an experiment ref (what `dvc exp show` lists; polled with `git for-each-ref`), and until
  the command returns (later: it waits for the workers to exit); once per QUEUE_BATCHES entry (workers,
  extra environment);
- (d) the peer: the seed's cells as a notebook user re-runs them for a new rank in a warm Python process
  (build RichBoyNet, load models/pretrained.safetensors, register the seed's LoRA parametrization, freeze,
  100 Adam steps on the target digit, the seed's per-image test loop over the 10,000 test images), from
  bench/seed_procedure.py; imports and the first data load are not timed.
(a)-(c) run in a scratch clone of the committed HEAD (WORKDIR/repo), never in this checkout: the clone gets
a copy of this checkout's DVC cache objects (.dvc/cache/files; not the run cache, so every rank is new to
it), then `dvc checkout`; if `dvc status` is not clean it runs `dvc repro` once, untimed, and says so.

Usage: python bench/experiments.py [--quick] [--out bench/experiments.json] [--quiet-wait SECONDS]
"""

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
VENV_BIN = ROOT / ".venv" / "bin"
WORKDIR = Path("/tmp/benchexp")  # scratch: the clone (WORKDIR/repo) and the logs (WORKDIR/logs)

# Fresh experiments. Ranks must be <= 10 (linear3 has 10 outputs), so only 2..10 are new (HEAD runs rank 1):
# the -j 2 batch reruns the -j 1 batch's ranks with lora.alpha=2, which makes them new and changes no work.
NEW_RANKS = (2, 3, 5)
QUICK_NEW_RANKS = (2, 3)  # the revisit needs a rank that is not the workspace's current one: two at least
QUEUE_RANKS = (4, 6, 7, 8)
QUEUE_SIZE = len(QUEUE_RANKS)
# Each batch: name, workers, extra environment for the workers (and so the stages), extra -S overrides.
QUEUE_BATCHES = (
    {"name": "serial", "jobs": 1, "env": {}, "overrides": ()},
    {"name": "parallel", "jobs": 2, "env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
     "overrides": ("lora.alpha=2",)},
)
PARALLEL_BATCH = "parallel"  # the batch the target applies to (the recommended setting)
PEER_REPEAT, QUICK_PEER_REPEAT = 5, 2
NOOP_REPEAT, QUICK_NOOP_REPEAT = 3, 1
TORCH_REPEAT, QUICK_TORCH_REPEAT = 3, 1
# Before each timed command, wait (up to QUIET_WAIT_S) until other processes use < QUIET_CPUS CPUs, and
# sample again after it: on a shared machine a measurement with either sample above it is flagged.
QUIET_CPUS = 0.3
QUIET_WAIT_S = 600.0  # --quiet-wait
TARGETS = {"new_vs_peer": 1.0, "revisit_vs_new": 0.2, "queue_parallel_vs_new": 2.5}

EXP_REF = re.compile(r"^refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/")
STAGE_RUN = re.compile(r"Running stage '([^']+)'")
STAGE_RESTORED = re.compile(r"Stage '([^']+)' is cached - skipping run")
STAGE_LINE = re.compile(r"Running stage '([^']+)'|Stage '([^']+)' (?:is cached|didn't change)")


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for every command: the venv first on PATH, unbuffered Python, plus `extra`."""
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
            **(extra or {})}


def run(cmd: list[str], cwd: Path, log: Path, extra_env: dict[str, str] | None = None,
        check: bool = True, timed: bool = False) -> dict:
    """Run `cmd`, logging its output; wall time, output, and when each stage began (seconds from the start).
    `timed`: wait for a quiet machine first and record the CPUs others used before and after (busy_cpus)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    before = wait_quiet() if timed else None
    marks: list[tuple[str, float]] = []
    lines: list[str] = []
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        for line in proc.stdout:  # type: ignore[union-attr]
            f.write(line)
            lines.append(line)
            m = STAGE_LINE.search(line)
            if m:
                marks.append((m.group(1) or m.group(2), time.perf_counter() - t0))
        rc = proc.wait()
    wall = time.perf_counter() - t0
    if check and rc:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {rc}); see {log}")
    busy = [before, busy_cpus(1.0)] if timed else None
    return {"wall_s": wall, "rc": rc, "output": "".join(lines), "marks": marks, "busy_cpus": busy}


def stage_times(marks: list[tuple[str, float]], wall: float) -> dict[str, float]:
    """Seconds from each stage's announcement to the next one (the last one: to the end of the command)."""
    ends = [t for _, t in marks[1:]] + [wall]
    return {name: round(end - t, 2) for (name, t), end in zip(marks, ends)}


def summary(values: list[float]) -> dict:
    """Median, min, max and the runs, rounded to 0.01 s."""
    return {"median_s": round(statistics.median(values), 2), "min_s": round(min(values), 2),
            "max_s": round(max(values), 2), "n": len(values), "runs_s": [round(v, 2) for v in values]}


def progress(msg: str) -> None:
    """One line of progress on stdout."""
    print(msg, flush=True)


def dvc_out(args: list[str], cwd: Path) -> str:
    """Stdout of a short dvc command (empty on failure)."""
    proc = subprocess.run(["dvc", *args], cwd=cwd, env=env(), capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


# --- setup and machine ---------------------------------------------------------------------------------------

def make_clone(repo: Path, logs: Path) -> dict:
    """Clone HEAD into `repo`, copy this checkout's cache objects, check out, warm up; repro once if not clean."""
    if repo.exists():
        shutil.rmtree(repo)
    repo.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    (repo / ".dvc" / "cache").mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(ROOT / ".dvc" / "cache" / "files"), str(repo / ".dvc" / "cache" / "files")],
                   check=True)
    run(["dvc", "checkout"], repo, logs / "checkout.log", check=False)
    status = dvc_out(["status"], repo)
    # Warm the page cache (torch's shared libraries are several GB; cold, `import torch` took 23 s here).
    run(["python", "-c", "import torch, torchvision"], repo, logs / "warmup.log", check=False)
    head = subprocess.run(["git", "log", "-1", "--format=%H %s"], cwd=repo, capture_output=True, text=True).stdout
    setup = {"head": head.strip(), "status_before": status, "repro_needed": "up to date" not in status}
    if setup["repro_needed"]:
        progress(f"  dvc status not clean ({status.splitlines()[:3]}): running dvc repro once, untimed")
        setup["repro_untimed_s"] = round(run(["dvc", "repro"], repo, logs / "repro.log")["wall_s"], 1)
        status = dvc_out(["status"], repo)
        if "up to date" not in status:
            raise SystemExit(f"dvc status still not clean after dvc repro:\n{status}")
    return setup


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def busy_cpus(seconds: float = 2.0) -> float:
    """CPUs' worth of work other processes did over `seconds` (/proc/stat): ~0 on a quiet machine."""
    def ticks() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    try:
        t0, i0 = ticks()
        time.sleep(seconds)
        t1, i1 = ticks()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return round((1 - (i1 - i0) / max(t1 - t0, 1)) * (os.cpu_count() or 1), 2)


def wait_quiet() -> float:
    """Wait until other processes use fewer than QUIET_CPUS CPUs (at most QUIET_WAIT_S); the last sample."""
    deadline, said = time.monotonic() + QUIET_WAIT_S, False
    while (busy := busy_cpus(2.0)) >= QUIET_CPUS and time.monotonic() < deadline:
        if not said:
            progress(f"    waiting for a quiet machine: other processes use {busy} CPUs ...")
            said = True
        time.sleep(4)
    return busy


def link_type(repo: Path) -> dict:
    """`dvc config cache.type` and the link type actually in effect for models/pretrained.safetensors."""
    configured = dvc_out(["config", "cache.type"], repo)
    out = repo / "models" / "pretrained.safetensors"
    cache = repo / ".dvc" / "cache" / "files"
    if out.is_symlink():
        effective = "symlink"
    elif out.stat().st_nlink > 1:
        effective = "hardlink"
    else:
        probe = repo / ".dvc" / "tmp" / "reflink-probe"
        probe.parent.mkdir(parents=True, exist_ok=True)
        sample = next(p for p in cache.rglob("*") if p.is_file())
        reflink = subprocess.run(["cp", "--reflink=always", str(sample), str(probe)], capture_output=True)
        probe.unlink(missing_ok=True)
        effective = "copy" if reflink.returncode else "reflink"
    return {"config": configured or "unset (default: reflink,copy)", "effective": effective}


def machine(repo: Path) -> dict:
    """CPU, cores, dvc version, the cache link type."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "dvc": dvc_out(["--version"], repo),
            "python": sys.version.split()[0], "cache_type": link_type(repo)}


# --- the DVC side --------------------------------------------------------------------------------------------

def floor(repo: Path, logs: Path, torch_repeat: int, noop_repeat: int) -> dict:
    """`python -c "import torch"` and a no-op `dvc exp run`, each repeated."""
    imports = [run(["python", "-c", "import torch"], repo, logs / "import_torch.log", timed=True)
               for _ in range(torch_repeat)]
    noops = []
    for i in range(noop_repeat):
        noops.append(run(["dvc", "exp", "run"], repo, logs / f"noop_{i}.log", timed=True))
        if STAGE_RUN.search(noops[-1]["output"]):
            raise SystemExit(f"the no-op dvc exp run ran a stage; see {logs / f'noop_{i}.log'}")
    return {name: {**summary([r["wall_s"] for r in rs]), "busy_cpus": max(max(r["busy_cpus"]) for r in rs)}
            for name, rs in (("import_torch", imports), ("noop_exp_run", noops))}


def exp_run(repo: Path, log: Path, overrides: list[str]) -> dict:
    """One `dvc exp run -S ...` in the clone's workspace: wall time, the stages run and restored."""
    args = [a for o in overrides for a in ("-S", o)]
    r = run(["dvc", "exp", "run", *args], repo, log, timed=True)
    ran = STAGE_RUN.findall(r["output"])
    return {"overrides": overrides, "wall_s": round(r["wall_s"], 2), "busy_cpus": r["busy_cpus"],
            "stages_run": ran, "stages_restored": STAGE_RESTORED.findall(r["output"]),
            "stage_s": {k: v for k, v in stage_times(r["marks"], r["wall_s"]).items() if k in ran}}


def new_experiments(repo: Path, logs: Path, ranks: tuple[int, ...]) -> dict:
    """(a): one `dvc exp run -S lora.rank=N` per rank, each never run before."""
    runs = []
    for rank in ranks:
        progress(f"(a) new experiment: dvc exp run -S lora.rank={rank} ...")
        runs.append(exp_run(repo, logs / f"new_rank{rank}.log", [f"lora.rank={rank}"]))
        progress(f"    {runs[-1]['wall_s']:.1f} s, ran {', '.join(runs[-1]['stages_run']) or 'nothing'}")
        if not runs[-1]["stages_run"]:
            raise SystemExit(f"rank {rank} ran no stage: it was not a new experiment")
    return {"ranks": list(ranks), **summary([r["wall_s"] for r in runs]),
            "busy_cpus": max(max(r["busy_cpus"]) for r in runs), "runs": runs}


def revisit(repo: Path, logs: Path, rank: int) -> dict:
    """(b): `dvc exp run -S lora.rank=<rank>` for a rank already run; restored from the run cache or re-run?"""
    progress(f"(b) revisited experiment: dvc exp run -S lora.rank={rank} ...")
    r = exp_run(repo, logs / f"revisit_rank{rank}.log", [f"lora.rank={rank}"])
    r["rank"] = rank
    r["busy_cpus"] = max(r["busy_cpus"])
    r["restored_from_run_cache"] = not r["stages_run"] and bool(r["stages_restored"])
    how = "restored from the run cache: no stage ran" if r["restored_from_run_cache"] else \
        f"ran {', '.join(r['stages_run'])} again"
    progress(f"    {r['wall_s']:.1f} s, {how}")
    return r


def queue_counts(repo: Path) -> dict[str, int]:
    """How many queue tasks `dvc queue status` lists per status (Queued, Running, Success, Failed...)."""
    counts: dict[str, int] = {}
    for line in dvc_out(["queue", "status"], repo).splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] != "Task" and not line.startswith("Worker"):
            counts[parts[-1]] = counts.get(parts[-1], 0) + 1
    return counts


def workers_alive(repo: Path) -> bool:
    """Whether `dvc queue status` reports any worker, active or idle."""
    m = re.search(r"Worker status: (\d+) active, (\d+) idle", dvc_out(["queue", "status"], repo))
    return bool(m) and (int(m.group(1)) + int(m.group(2))) > 0


def wait_workers_gone(repo: Path, timeout: float = 180.0) -> None:
    """Wait until the queue's workers have exited by themselves (~10-20 s after the queue empties).

    Not `dvc queue stop`: its shutdown message stays in the filesystem broker, and the next worker started
    under the same name (dvc-exp-<hash>-1) reads it and quits after its first task. A worker still alive
    would also keep the environment it was started with, which the next batch must not inherit."""
    deadline = time.monotonic() + timeout
    while workers_alive(repo):
        if time.monotonic() > deadline:
            raise SystemExit(f"queue workers still alive after {timeout:.0f} s; see `dvc queue status`")
        time.sleep(3)


def abort_queue(repo: Path, logs: Path) -> None:
    """`dvc queue stop --kill`: the workers run detached, so an interrupted benchmark must stop them."""
    run(["dvc", "queue", "stop", "--kill"], repo, logs / "queue_abort.log", check=False)


def exp_refs(repo: Path) -> set[str]:
    """The experiment refs (refs/exps/<baseline sha>/<name>): one per finished, collected experiment."""
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], cwd=repo,
                         capture_output=True, text=True).stdout.split()
    return {ref for ref in out if EXP_REF.match(ref)}


def run_queue(repo: Path, log: Path, jobs: int, extra_env: dict[str, str], want: int) -> dict:
    """`dvc exp run --run-all -j J` (starts J workers, as `dvc queue start -j J` does, then follows the logs
    until it has every result); seconds until `want` new experiment refs exist (results_s: what `dvc exp show`
    shows) and until the command returns (return_s: it also waits for the workers to exit)."""
    before = wait_quiet()
    refs = exp_refs(repo)
    results_s = None
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(["dvc", "exp", "run", "--run-all", "--jobs", str(jobs)], cwd=repo,
                                env=env(extra_env), stdout=f, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if results_s is None and len(exp_refs(repo) - refs) >= want:
                results_s = time.perf_counter() - t0
            time.sleep(0.25)
    return_s = time.perf_counter() - t0
    return {"results_s": return_s if results_s is None else results_s, "return_s": return_s, "rc": proc.returncode,
            "experiments_done": len(exp_refs(repo) - refs), "busy_cpus": max(before, busy_cpus(1.0)),
            "output": log.read_text()}


def queue_batch(repo: Path, logs: Path, batch: dict) -> dict:
    """(c): queue QUEUE_SIZE new experiments, run them with the batch's workers and environment."""
    overrides = list(batch["overrides"])
    before = queue_counts(repo)
    t0 = time.perf_counter()
    for rank in QUEUE_RANKS:
        args = [a for o in [f"lora.rank={rank}", *overrides] for a in ("-S", o)]
        run(["dvc", "exp", "run", "--queue", *args], repo, logs / f"enqueue_{batch['name']}_{rank}.log")
    queued_s = time.perf_counter() - t0
    env_text = " ".join(f"{k}={v}" for k, v in batch["env"].items())
    progress(f"(c) {QUEUE_SIZE} queued experiments: dvc exp run --run-all -j {batch['jobs']} {env_text} ...")
    r = run_queue(repo, logs / f"queue_{batch['name']}.log", batch["jobs"], batch["env"], QUEUE_SIZE)
    counts = {k: n - before.get(k, 0) for k, n in queue_counts(repo).items() if n - before.get(k, 0)}
    wait_workers_gone(repo)
    progress(f"    all {QUEUE_SIZE} results after {r['results_s']:.1f} s ({r['results_s'] / QUEUE_SIZE:.1f} s each), "
             f"--run-all returned after {r['return_s']:.1f} s; queue: {counts}")
    return {"jobs": batch["jobs"], "env": batch["env"], "overrides": overrides, "ranks": list(QUEUE_RANKS),
            "wall_s": round(r["results_s"], 2), "run_all_return_s": round(r["return_s"], 2),
            "per_experiment_s": round(r["results_s"] / QUEUE_SIZE, 2), "busy_cpus": r["busy_cpus"],
            "enqueue_s": round(queued_s, 2), "finetune_runs_seen": STAGE_RUN.findall(r["output"]).count("finetune"),
            "queue_status": counts, "failed": bool(r["rc"]) or r["experiments_done"] < QUEUE_SIZE}


def queue_all(repo: Path, logs: Path) -> dict:
    """(c) for every QUEUE_BATCHES entry, one after the other; leaves no worker behind."""
    try:
        wait_workers_gone(repo)
        return {b["name"]: queue_batch(repo, logs, b) for b in QUEUE_BATCHES}
    except BaseException:  # interrupted (Ctrl-C, SIGTERM) or failed: the workers run detached, abort them
        abort_queue(repo, logs)
        raise


# --- the peer ------------------------------------------------------------------------------------------------

def peer(repo: Path, logs: Path, repeat: int, ranks: tuple[int, ...]) -> dict:
    """(d): this script's --peer-worker in a fresh process in the clone; its JSON."""
    progress(f"(d) peer: the seed's cells re-run {repeat}x in one warm Python process ...")
    out = logs / "peer.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--peer-worker", "--out", str(out),
           "--peer-repeat", str(repeat), "--peer-ranks", ",".join(map(str, ranks))]
    busy = run(cmd, repo, logs / "peer.log", timed=True)["busy_cpus"]
    result = json.loads(out.read_text())
    result["busy_cpus"] = max(busy)
    result.update(summary([r["total_s"] for r in result["reps"]]))
    progress(f"    median {result['median_s']:.1f} s (min {result['min_s']:.1f}, max {result['max_s']:.1f})")
    return result


def peer_worker(out: Path, repeat: int, ranks: list[int]) -> None:
    """Run in the clone: one untimed data load, then `repeat` timed re-runs of the seed's cells; write JSON."""
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
    first_load_s = time.perf_counter() - t0

    reps = []
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


# --- report --------------------------------------------------------------------------------------------------

def ratios(results: dict) -> dict:
    """(a)/peer, (b)/(a), (c parallel)/(a), each with its target and whether it is met."""
    new = results["new"]["median_s"]
    values = {"new_vs_peer": new / results["peer"]["median_s"],
              "revisit_vs_new": results["revisit"]["wall_s"] / new,
              "queue_parallel_vs_new": results["queue"][PARALLEL_BATCH]["wall_s"] / new}
    return {k: {"ratio": round(v, 3), "target": TARGETS[k], "met": v <= TARGETS[k]} for k, v in values.items()}


def fmt(s: dict) -> str:
    """'12.3 s (11.9-13.0, n=3)' from a summary()."""
    if s["n"] == 1:
        return f"{s['median_s']:.1f} s"
    return f"{s['median_s']:.1f} s ({s['min_s']:.1f}-{s['max_s']:.1f}, n={s['n']})"


def table(results: dict) -> str:
    """The markdown table printed at the end (and pasted into bench/README.md)."""
    r, q = results["ratios"], results["queue"]

    def ratio(key: str, label: str) -> str:
        met = "met" if r[key]["met"] else "NOT met"
        return f"{label} **{r[key]['ratio']:.2f}** (target <= {r[key]['target']}: {met})"

    def busy(part: dict) -> str:
        return " †" if part.get("busy_cpus", 0) >= QUIET_CPUS else ""

    rev = results["revisit"]
    rev_note = "restored, no stage ran" if rev["restored_from_run_cache"] else \
        f"re-ran {len(rev['stages_run'])} stages"
    lines = ["| measurement | wall time | ratio |", "| --- | --- | --- |",
             f"| (d) peer: the seed's cells re-run in a warm notebook process | {fmt(results['peer'])}"
             f"{busy(results['peer'])} | - |",
             f"| (a) new experiment `dvc exp run -S lora.rank=N` | {fmt(results['new'])}{busy(results['new'])} | "
             f"{ratio('new_vs_peer', '(a)/peer')} |",
             f"| (b) revisited `dvc exp run -S lora.rank={rev['rank']}` ({rev_note}) | "
             f"{rev['wall_s']:.1f} s{busy(rev)} | {ratio('revisit_vs_new', '(b)/(a)')} |"]
    for name, b in q.items():
        env_text = " ".join(f"{k}={v}" for k, v in b["env"].items())
        label = f"(c) {QUEUE_SIZE} queued, `-j {b['jobs']}`" + (f" {env_text}" if env_text else "")
        cell = ratio("queue_parallel_vs_new", "(c)/(a)") if name == PARALLEL_BATCH else \
            f"(c)/(a) {b['wall_s'] / results['new']['median_s']:.2f}"
        lines.append(f"| {label} | {b['wall_s']:.1f} s ({b['per_experiment_s']:.1f} s each; `--run-all` returns at "
                     f"{b['run_all_return_s']:.1f} s){busy(b)} | {cell} |")
    f = results["floor"]
    lines.append(f"| floor: `python -c \"import torch\"` / no-op `dvc exp run` | {fmt(f['import_torch'])}"
                 f"{busy(f['import_torch'])} / {fmt(f['noop_exp_run'])}{busy(f['noop_exp_run'])} | - |")
    if results["disturbed"]:
        lines.append(f"\n† other processes used >= {QUIET_CPUS} CPUs just before or after it: inflated, "
                     "measure again.")
    return "\n".join(lines)


def main() -> None:
    global QUIET_WAIT_S
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run, ~7 min on 2 cores)")
    parser.add_argument("--out", type=Path, default=BENCH / "experiments.json", help="where to write the JSON")
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="scratch directory (the clone, logs)")
    parser.add_argument("--quiet-wait", type=float, default=QUIET_WAIT_S,
                        help="seconds to wait for other processes to go quiet before each measurement (0: never)")
    parser.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--peer-repeat", type=int, default=PEER_REPEAT, help=argparse.SUPPRESS)
    parser.add_argument("--peer-ranks", default=",".join(map(str, NEW_RANKS)), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_worker:
        peer_worker(args.out, args.peer_repeat, [int(r) for r in args.peer_ranks.split(",")])
        return

    QUIET_WAIT_S = args.quiet_wait
    repo, logs = args.workdir / "repo", args.workdir / "logs"
    if logs.exists():
        shutil.rmtree(logs)
    ranks = QUICK_NEW_RANKS if args.quick else NEW_RANKS
    t_start = time.perf_counter()
    progress(f"setup: git clone {ROOT} {repo}; copy the DVC cache objects; dvc checkout (untimed) ...")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # so that queue workers get stopped
    busy = busy_cpus()
    if busy > 0.2:
        progress(f"warning: other processes keep {busy} CPUs busy: the times below will be inflated")
    results: dict = {"quick": args.quick, "busy_cpus_at_start": busy, "setup": make_clone(repo, logs),
                     "machine": machine(repo)}
    progress(f"    {results['machine']['cpu']}, {results['machine']['cores']} cores, "
             f"{results['machine']['dvc']}, cache link type: {results['machine']['cache_type']}")
    progress("floor: python -c 'import torch'; no-op dvc exp run ...")
    results["floor"] = floor(repo, logs, QUICK_TORCH_REPEAT if args.quick else TORCH_REPEAT,
                             QUICK_NOOP_REPEAT if args.quick else NOOP_REPEAT)
    results["new"] = new_experiments(repo, logs, ranks)
    results["revisit"] = revisit(repo, logs, ranks[0])
    results["queue"] = queue_all(repo, logs)
    results["peer"] = peer(repo, logs, QUICK_PEER_REPEAT if args.quick else PEER_REPEAT, ranks)
    results["machine"]["torch"] = results["peer"]["torch"]
    results["ratios"] = ratios(results)
    parts = {"peer": results["peer"], "new": results["new"], "revisit": results["revisit"],
             **{f"queue_{k}": v for k, v in results["queue"].items()}, **results["floor"]}
    results["disturbed"] = [k for k, v in parts.items() if v["busy_cpus"] >= QUIET_CPUS]
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    results["load_at_end"] = [round(x, 2) for x in os.getloadavg()]  # 1/5/15-min load: ~our own run alone
    results["logs"] = str(logs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['dvc'] and 'dvc ' + m['dvc']}, "
          f"cache.type {m['cache_type']['config']} -> {m['cache_type']['effective']}"
          f"{' (quick smoke run)' if args.quick else ''}\n")
    print(table(results))
    print(f"\nwrote {args.out} ({results['total_s']:.0f} s in all; logs in {logs})")


if __name__ == "__main__":
    main()
