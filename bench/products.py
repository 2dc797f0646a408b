"""Where portable mode's time goes: one RichBoyNet training step (batch 10, Adam) and one pass over the 10,000 test
images, per way of computing the matrix products, each in its own process (MKL reads its branch once per process).

    python bench/products.py --data data/raw [--rounds 3] [--json bench/products.json]

Each variant also prints a digest of the weights after its steps and of the test logits: variants with equal digests
computed the same bits. Backs the table in docs/reproducibility.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# name: (numerics mode, OpenBLAS threads, torch (ATen) threads, products through numpy's OpenBLAS?)
VARIANTS = {
    "MKL, fast, 2 threads": ("fast", 1, 2, False),
    "MKL, fast, 1 thread": ("fast", 1, 1, False),
    "MKL COMPATIBLE, 1 thread (portable before #26)": ("portable", 1, 1, False),
    "OpenBLAS Haswell, 1 thread; ATen 1 thread": ("portable", 1, 1, True),
    "OpenBLAS Haswell, 1 thread; ATen 2 threads (portable now)": ("portable", 1, 2, True),
    "OpenBLAS Haswell, 2 threads; ATen 1 thread": ("portable", 2, 1, True),
}
PORTABLE = "OpenBLAS Haswell, 1 thread; ATen 2 threads (portable now)"

CHILD = """
import hashlib, json, os, sys, time
mode, blas_threads, torch_threads, routed, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
from lora_mnist import numerics
numerics.pin(mode)
os.environ["OPENBLAS_NUM_THREADS"] = blas_threads  # over pin(): the variant decides
if not routed:
    numerics.route_products = lambda: None  # MKL computes the products, as portable did before #26
import torch
from lora_mnist.base.data import load_split
from lora_mnist.base.model import RichBoyNet
from lora_mnist.base.train import logits, train
device = numerics.configure_torch("cpu", mode)
torch.set_num_threads(torch_threads)
images, labels = load_split(data, "train")
test_images, _ = load_split(data, "test")
torch.manual_seed(0)
model = RichBoyNet()
batches = [torch.arange(i, i + 10) for i in range(0, 2200, 10)]
train(model, images, labels, batches[:20], steps=20, lr=1e-3, desc="warm-up")
start = time.perf_counter()
train(model, images, labels, batches[20:], steps=200, lr=1e-3, desc="steps")
step_ms = (time.perf_counter() - start) / 200 * 1000
passes = []
for _ in range(3):
    start = time.perf_counter()
    out = logits(model, test_images)
    passes.append(time.perf_counter() - start)
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters()) + out.numpy().tobytes())
print(json.dumps({"step_ms": step_ms, "pass_s": min(passes), "digest": digest.hexdigest()[:16],
                  "routed": numerics.product_calls}))
"""


def run(variant: tuple, data: str, cpus: str | None) -> dict:
    """One variant in a fresh process (pinned to `cpus` with taskset if given)."""
    mode, blas, torch_threads, routed = variant
    cmd = [sys.executable, "-c", CHILD, mode, str(blas), str(torch_threads), "1" if routed else "0", data]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/raw")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    from lora_mnist.numerics import cpu_identity

    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):  # alternating: a slow spell of the machine hits every variant
        for name, variant in VARIANTS.items():
            results[name].append(run(variant, args.data, None))
    # The portable route's bits on one core and on two: the thread count, not the machine's cores, decides them.
    one_core = run(VARIANTS[PORTABLE], args.data, "0")["digest"]
    print(f"CPU: {cpu_identity()}")
    print(f"| path | one training step (batch 10, Adam) | one pass over 10,000 test images | bits |")
    print("|---|---|---|---|")
    table = {}
    for name, runs in results.items():
        steps, passes = [r["step_ms"] for r in runs], [r["pass_s"] for r in runs]
        digests = sorted({r["digest"] for r in runs})
        table[name] = {"step_ms": steps, "pass_s": passes, "digests": digests}
        print(f"| {name} | {statistics.median(steps):.1f} ms ({min(steps):.1f}-{max(steps):.1f}) | "
              f"{statistics.median(passes):.2f} s ({min(passes):.2f}-{max(passes):.2f}) | {', '.join(digests)} |")
    print(f"{PORTABLE} under taskset -c 0: {one_core}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_identity(), "variants": table,
                                               "portable_one_core_digest": one_core}, indent=1) + "\n")


if __name__ == "__main__":
    main()
