"""The GPU check (bench/gpu_check.sh): dvc.yaml's stage commands, in order, twice, on a machine without DVC.

`prepare DIR` (here, with the project's venv): the real MNIST files gzipped and the wheels of the pure-Python
packages a bare GPU machine may lack (tqdm), under DIR (~12 MB: the device tool carries at most 64 MiB).
`run DIR --device cuda` (on the GPU machine): each run in its own copy of the project with `device` (and any `--set
key=value`) changed in params.yaml, the MNIST directory as data.source; then a report: whether the two runs wrote
the same bytes, accuracy and target against the committed CPU results, wall time per stage, and one training
step's time on the device against the CPU's, measured in that run on that machine.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "data/raw/MNIST/raw"
PURE_PYTHON = ["tqdm"]  # what the library imports beyond torch, numpy, safetensors, pyyaml and matplotlib
STAGE_TIMEOUT_S = 600

STEP = """
import sys, time
from lora_mnist.numerics import pin
pin(sys.argv[2])
import torch
from lora_mnist.base.model import RichBoyNet
from lora_mnist.base.train import train
from lora_mnist.lora.layer import apply_lora, freeze_non_lora
from lora_mnist.numerics import configure_torch, generator
device = configure_torch(sys.argv[1], sys.argv[2])
g = generator(0)
model = RichBoyNet()
apply_lora(model, ["linear1", "linear2", "linear3"], 1, 1.0, generator=g)
freeze_non_lora(model)
model.to(device)
images, labels = torch.randn(1000, 784, generator=g).to(device), torch.randint(0, 10, (1000,), generator=g).to(device)
def batches(n):
    return [torch.randint(0, 1000, (10,), generator=g) for _ in range(n)]
train(model, images, labels, batches(20), steps=20, lr=1e-3, desc="warm-up")
steps = int(sys.argv[3])
if device.type == "cuda":
    torch.cuda.synchronize()
t = time.perf_counter()
train(model, images, labels, batches(steps), steps=steps, lr=1e-3, desc="timed")  # returns the losses: synced
print((time.perf_counter() - t) / steps * 1000)
"""


def prepare(out: Path) -> None:
    """Gzip the MNIST files (mtime 0: the same bytes every time) and download the pure-Python wheels."""
    if not MNIST.is_dir():
        sys.exit(f"error: {MNIST}: no MNIST files here: run `make repro` (or `dvc pull data/raw`) first")
    (out / "mnist").mkdir(parents=True, exist_ok=True)
    for path in sorted(MNIST.iterdir()):
        with open(path, "rb") as src, gzip.GzipFile(out / "mnist" / f"{path.name}.gz", "wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)
    wheels = out / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--dest", str(wheels), *PURE_PYTHON], check=True, timeout=300)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"prepared {out}: {size / 2**20:.1f} MiB (MNIST gzipped, {', '.join(p.name for p in wheels.iterdir())})")


def stage_commands() -> list[tuple[str, str]]:
    """dvc.yaml's stages in file order (checked topological), `${var}` filled from its vars."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    values = {k: str(v) for block in spec.get("vars", []) for k, v in block.items()}

    def fill(text: object) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], str(text))

    def outputs(stage: dict) -> set[str]:  # outs, metrics and plots: a path, or {path: options}
        return {fill(next(iter(x)) if isinstance(x, dict) else x) for key in ("outs", "metrics", "plots")
                for x in stage.get(key, [])}

    written = set().union(*map(outputs, spec["stages"].values()))
    made: set[str] = set()
    commands = []
    for name, st in spec["stages"].items():
        later = [d for d in map(fill, st.get("deps", [])) if d in written and d not in made]
        if later:
            sys.exit(f"error: dvc.yaml: stage {name} reads {later} before the stage that writes it")
        made |= outputs(st)
        commands.append((name, fill(st["cmd"])))
    return commands


def digests(workdir: Path, roots: tuple[str, ...] = ("models", "metrics", "plots", "data")) -> dict[str, str]:
    """sha256 of every file the stages wrote."""
    out = {}
    for root in roots:
        for path in sorted((workdir / root).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(workdir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_pipeline(workdir: Path, mnist: Path, params_set: dict, env: dict[str, str]) -> dict[str, float]:
    """Copy the project to `workdir`, set the params, run every stage command; wall seconds per stage."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    for name in ("src", "stages"):
        shutil.copytree(ROOT / name, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dvc.yaml", workdir)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = str(mnist.resolve())
    for key, value in params_set.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[leaf] = value
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    times = {}
    for name, cmd in stage_commands():
        t = time.perf_counter()
        proc = subprocess.run(["bash", "-c", cmd], cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=STAGE_TIMEOUT_S)
        times[name] = round(time.perf_counter() - t, 2)
        if proc.returncode != 0:
            sys.exit(f"error: stage {name} failed in {workdir} ({proc.returncode}):\n{proc.stderr[-3000:]}")
        print(f"  {name}: {times[name]:.1f} s  {proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ''}",
              flush=True)
    return times


def headline(root: Path) -> dict:
    """The registered metrics (metrics/summary/*.json) and the chosen target, as the table shows them."""
    out = {}
    for path in sorted((root / "metrics/summary").glob("*.json")):
        out.update(json.loads(path.read_text()))
    return out


def step_ms(device: str, mode: str, env: dict[str, str], steps: int = 300) -> float:
    proc = subprocess.run([sys.executable, "-c", STEP, device, mode, str(steps)], env=env, capture_output=True,
                          text=True, timeout=STAGE_TIMEOUT_S, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"error: step timing on {device} failed:\n{proc.stderr[-3000:]}")
    return round(float(proc.stdout.strip().splitlines()[-1]), 3)


def run(prepared: Path, device: str, sets: list[str], out: Path) -> None:
    mnist = prepared / "mnist"
    if not mnist.is_dir():
        sys.exit(f"error: {mnist}: missing: run `bench/gpu_check.sh prepare` on the machine with the data first")
    import torch  # the machine's own

    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: device cuda requested but torch.cuda.is_available() is False (dry run: `run cpu`)")
    params_set = {"device": device, **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in sets)}}
    shim = prepared / "bin"  # dvc.yaml's commands call `python`: make it this interpreter (a script, not a link:
    shim.mkdir(exist_ok=True)  # a linked venv python would lose its site-packages)
    (shim / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shim / "python").chmod(0o755)
    pythonpath = [str(ROOT / "src"), *map(str, sorted((prepared / "wheels").glob("*.whl")))]
    env = {**os.environ, "PATH": f"{shim.resolve()}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(pythonpath), "TQDM_DISABLE": "1"}
    runs, times = [], []
    for i in (1, 2):
        print(f"run {i}: device {device}, {params_set}", flush=True)
        workdir = prepared / "work" / f"run{i}"
        times.append(run_pipeline(workdir, mnist, params_set, env))
        runs.append(digests(workdir))
    differ = sorted(k for k in runs[0].keys() | runs[1].keys() if runs[0].get(k) != runs[1].get(k))
    mode = yaml.safe_load((prepared / "work/run1/params.yaml").read_text())["numerics"]
    steps = {f"cpu ({mode})": step_ms("cpu", mode, env), "cpu (fast)": step_ms("cpu", "fast", env)}
    if device != "cpu":
        steps[device] = step_ms(device, mode, env)
    numerics = json.loads((prepared / "work/run1/metrics/numerics.json").read_text())
    report = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "device_name": numerics.get("device_name", numerics.get("cpu")), "cpu": numerics.get("cpu"),
                    "cpu_count": os.cpu_count()},
        "params": params_set, "same_bits_run_to_run": not differ, "files_compared": len(runs[0]),
        "files_that_differ": differ,
        "headline": {"this device": headline(prepared / "work/run1"), "committed (CPU)": headline(ROOT)},
        "stage_seconds": {"run 1": times[0], "run 2": times[1]},
        "train_step_ms": steps, "numerics": numerics,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"same bits run to run: {not differ} ({len(runs[0])} files); report: {out / 'gpu_check.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("dir", type=Path)
    r = sub.add_parser("run")
    r.add_argument("dir", type=Path)
    r.add_argument("--device", default="cuda", choices=("cuda", "cpu", "mps"))
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another param, as dvc -S")
    r.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.dir)
    else:
        run(args.dir, args.device, args.set, args.out or args.dir / "out")


if __name__ == "__main__":
    main()
