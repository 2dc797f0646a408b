"""How fine-tuning cost grows with layer size and rank: three LoRA mechanisms, one fresh process per config.

Model: RichBoyNet with hidden_size_1 = hidden_size_2 = h (so linear2 is h x h), LoRA on linear1..3 with
alpha = rank (scale 1); linear3 has only 10 outputs, so its rank is min(rank, 10).
A step is what our fine-tuning does: zero_grad(set_to_none) + forward + cross-entropy + backward + fused
Adam, batch 10, on random images. Reported per config: the median step time over the timed steps (after
warm-up), and memory: `setup_mb` (model + LoRA, over the process after imports) and `step_mb` (the peak
that training adds on top of that: Adam's state, activations, gradients and whatever the mechanism
materialises; on CPU the resident-set high-water mark, reset with /proc/self/clear_refs just before the
first step; on CUDA torch.cuda.max_memory_allocated). CPU figures count whole pages the allocator holds,
so small configs read a little noisy; the trend is what matters.

Implementations:
- parametrize: our `lora_mnist.lora.apply_lora` (the seed's mechanism): weight = W + (B @ A) * scale is
  rebuilt on every forward, O(out * in * rank), and backward forms the full (out, in) weight gradient;
- lowrank: y = x @ W.T + b + ((x @ A.T) @ B.T) * scale, never materialising W + B @ A (defined below);
- peft: `peft.get_peft_model` with LoraConfig(target_modules=[linear1, linear2, linear3]) (also low-rank).

Usage: python bench/scaling.py [--device cpu|cuda] [--hidden 128 ... 8000] [--ranks 1 4 16 64]
Each config runs once per pass and keeps its fastest median (`--passes 2` on a shared machine: a burst of
other load spoils one pass, rarely both). Writes bench/scaling.json and bench/scaling.png; one pass of the
default sweep (6 sizes x 4 ranks x 3 mechanisms) takes ~7 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
IMPLS = ("parametrize", "lowrank", "peft")
TARGETS = ["linear1", "linear2", "linear3"]
BATCH = 10


def rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (high-water mark) of this process, in MiB (Linux)."""
    kb = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(kb.group(1)) / 1024  # type: ignore[union-attr]


def layer_ranks(rank: int) -> dict[str, int]:
    """linear3 has 10 outputs, so its rank is capped at 10 (our apply_lora refuses rank > min(in, out))."""
    return {"linear1": rank, "linear2": rank, "linear3": min(rank, 10)}


def build(impl: str, hidden: int, rank: int, device: str):
    """RichBoyNet(h, h) with LoRA (alpha = rank, so scale 1) on every Linear; returns (model, trainable params)."""
    import torch
    from torch import nn

    from lora_mnist.model import RichBoyNet

    class LowRankLoRALinear(nn.Module):
        """A frozen Linear plus ((x @ A.T) @ B.T) * scale: O(batch * rank * (in + out)), no (out, in) tensor."""

        def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> None:
            super().__init__()
            self.base = base.requires_grad_(False)
            self.lora_A = nn.Parameter(torch.randn(rank, base.in_features, generator=generator))  # (r, in)
            self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))  # (out, r)
            self.scale = alpha / rank

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + (x @ self.lora_A.T) @ self.lora_B.T * self.scale

    torch.manual_seed(0)
    model = RichBoyNet(hidden, hidden)
    gen = torch.Generator().manual_seed(0)
    if impl == "parametrize":
        from lora_mnist.lora import apply_lora, freeze_non_lora

        for name, r in layer_ranks(rank).items():
            apply_lora(model, [name], r, r, generator=gen)
        freeze_non_lora(model)
    elif impl == "lowrank":
        model.requires_grad_(False)
        for name, r in layer_ranks(rank).items():
            setattr(model, name, LowRankLoRALinear(getattr(model, name), r, r, gen))
    elif impl == "peft":
        from peft import LoraConfig, get_peft_model

        ranks = layer_ranks(rank)
        model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS,
                                                 rank_pattern=ranks, alpha_pattern=ranks, init_lora_weights="gaussian"))
    else:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    model.to(device).train()
    return model, [p for p in model.parameters() if p.requires_grad]


def measure(impl: str, hidden: int, rank: int, device: str, warmup: int, steps: int, budget_s: float) -> dict:
    """One config, in this (fresh) process: median step time and memory."""
    import torch
    from torch import nn

    # As the pipeline's configure_torch() for speed: flush denormals. (Its deterministic-algorithms switch
    # changes nothing on CPU but costs a 1.3 s import of torch._inductor per process, so it is left out.)
    torch.set_flush_denormal(True)
    import lora_mnist.lora  # noqa: F401  (import everything before the baseline: only tensors should count)

    if impl == "peft":
        import peft  # noqa: F401
    cuda = device == "cuda"
    # Warm up before the baseline, for every impl alike: BLAS pages, thread pool, autograd engine, and the
    # modules the first optimizer pulls in (~150 MiB of RSS on CPU, which is not the config's memory).
    w = torch.randn(64, 784, device=device, requires_grad=True)
    (torch.randn(BATCH, 784, device=device) @ w.T).sum().backward()
    torch.optim.Adam([w], lr=1e-3, fused=device in ("cpu", "cuda")).step()
    del w
    base_mb = torch.cuda.memory_allocated() / 2**20 if cuda else rss_mb("VmRSS")
    model, params = build(impl, hidden, rank, device)
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=device in ("cpu", "cuda"))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 784, generator=gen).to(device)
    y = torch.randint(0, 10, (BATCH,), generator=gen).to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    if cuda:  # model, LoRA and optimizer (no state yet) are resident; the peak from here on is training's
        torch.cuda.synchronize()
        start_mb = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    else:
        start_mb = rss_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the high-water mark) to the current RSS
    setup_mb = start_mb - base_mb
    for _ in range(warmup):
        step()
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < steps and (len(times) < 3 or time.perf_counter() < t_end):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_mb("VmHWM")
    return {"impl": impl, "hidden": hidden, "rank": rank, "device": device,
            "step_ms": round(1000 * statistics.median(times), 3), "steps_timed": len(times),
            "setup_mb": round(setup_mb, 1), "step_mb": round(peak_mb - start_mb, 1),
            "trainable": sum(p.numel() for p in params), "threads": torch.get_num_threads()}


def check_equivalence(hidden: int = 300, rank: int = 4) -> dict[str, float]:
    """The three mechanisms compute the same function for the same A, B (max |logit diff| vs parametrize)."""
    import torch

    from lora_mnist.lora import lora_layers

    models = {impl: build(impl, hidden, rank, "cpu")[0] for impl in IMPLS}
    gen = torch.Generator().manual_seed(2)
    for name, lora in lora_layers(models["parametrize"]).items():  # give B (zero at init) random values
        with torch.no_grad():
            lora.lora_A.copy_(torch.randn(lora.lora_A.shape, generator=gen))
            lora.lora_B.copy_(torch.randn(lora.lora_B.shape, generator=gen) * 0.01)
            low = getattr(models["lowrank"], name)
            low.lora_A.copy_(lora.lora_A)
            low.lora_B.copy_(lora.lora_B)
            peft_layer = models["peft"].base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(lora.lora_A)
            peft_layer.lora_B["default"].weight.copy_(lora.lora_B)
    x = torch.randn(64, 784, generator=gen)
    with torch.inference_mode():
        ref = models["parametrize"].eval()(x)
        return {impl: float((models[impl].eval()(x) - ref).abs().max()) for impl in IMPLS[1:]}


def crossovers(rows: list[dict]) -> dict[str, int | None]:
    """Per rank: the smallest hidden size from which lowrank is faster than parametrize (None if never)."""
    out: dict[str, int | None] = {}
    for rank in sorted({r["rank"] for r in rows}):
        t = {(r["impl"], r["hidden"]): r["step_ms"] for r in rows if r["rank"] == rank}
        hs = sorted(h for (impl, h) in t if impl == "parametrize" and ("lowrank", h) in t)
        wins = [h for h in hs if t[("lowrank", h)] < t[("parametrize", h)]]
        # the crossover: the first size from which lowrank wins at every larger size too
        out[str(rank)] = next((h for i, h in enumerate(hs) if all(x in wins for x in hs[i:])), None)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = sorted({r["rank"] for r in rows})
    fig, axes = plt.subplots(2, len(ranks), figsize=(3.6 * len(ranks), 6.4), sharex=True, squeeze=False)
    style = {"parametrize": ("C3", "o-"), "lowrank": ("C0", "s-"), "peft": ("C2", "^--")}
    for j, rank in enumerate(ranks):
        for impl in IMPLS:
            pts = sorted((r["hidden"], r["step_ms"], max(r["step_mb"], 0.1)) for r in rows
                         if r["rank"] == rank and r["impl"] == impl)
            if not pts:
                continue
            color, fmt = style[impl]
            axes[0][j].plot([p[0] for p in pts], [p[1] for p in pts], fmt, color=color, label=impl)
            axes[1][j].plot([p[0] for p in pts], [p[2] for p in pts], fmt, color=color, label=impl)
        axes[0][j].set_title(f"rank {rank}")
        for i in (0, 1):
            axes[i][j].axvline(1000, color="grey", linestyle=":", linewidth=1)  # the seed's hidden sizes are 1000/2000
            axes[i][j].set_xscale("log", base=2)
            axes[i][j].set_yscale("log")
            axes[i][j].grid(True, which="both", alpha=0.3)
        axes[1][j].set_xlabel("hidden size h (RichBoyNet(h, h))")
    axes[0][0].set_ylabel("fine-tune step (ms, median)")
    axes[1][0].set_ylabel("training peak over model (MiB)")
    axes[0][0].legend()
    dev = rows[0]["device"]
    fig.suptitle(f"LoRA fine-tuning cost: parametrize (W + BA per forward) vs low-rank path vs PEFT "
                 f"({dev}, batch {BATCH}; dotted: the seed's h = 1000)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 512, 1000, 2000, 4000, 8000])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per config (at most)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed steps per config (at least 3 steps)")
    parser.add_argument("--passes", type=int, default=1,
                        help="sweeps over all configs; each config keeps its fastest median (filters out bursts of load)")
    parser.add_argument("--out", type=Path, default=BENCH / "scaling.json")
    parser.add_argument("--merge", action="store_true",
                        help="start from the rows already in --out (same device) and keep each config's fastest")
    parser.add_argument("--one", nargs=3, metavar=("IMPL", "HIDDEN", "RANK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # child mode: one config, one JSON line
        impl, hidden, rank = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(measure(impl, hidden, rank, args.device, args.warmup, args.steps, args.budget)))
        return

    t0 = time.perf_counter()
    equivalence = check_equivalence()
    print(f"max |logit - parametrize logit|: {equivalence}", flush=True)
    best: dict[tuple, dict] = {}
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        best = {(r["impl"], r["hidden"], r["rank"]): r for r in old["rows"] if r["device"] == args.device}
    for p in range(args.passes):
        for hidden in args.hidden:
            for rank in args.ranks:
                for impl in args.impls:
                    cmd = [sys.executable, __file__, "--one", impl, str(hidden), str(rank), "--device", args.device,
                           "--warmup", str(args.warmup), "--steps", str(args.steps), "--budget", str(args.budget)]
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    row = json.loads(out.splitlines()[-1])
                    key = (impl, hidden, rank)
                    if key not in best or row["step_ms"] < best[key]["step_ms"]:
                        best[key] = row
                    print(f"pass {p + 1} h={hidden:5d} r={rank:3d} {impl:12s} {row['step_ms']:9.2f} ms/step  setup "
                          f"{row['setup_mb']:7.1f} MiB  training peak {row['step_mb']:7.1f} MiB", flush=True)
    rows = sorted(best.values(), key=lambda r: (r["hidden"], r["rank"], IMPLS.index(r["impl"])))
    result = {
        "model": "RichBoyNet(h, h): 784 -> h -> h -> 10, LoRA on linear1..3, alpha = rank, linear3 rank min(rank, 10)",
        "step": f"zero_grad + forward + cross-entropy + backward + fused Adam, batch {BATCH}",
        "device": args.device, "equivalence_max_abs_diff": equivalence,
        "crossover_hidden": crossovers(rows), "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print(f"crossover (smallest h where lowrank beats parametrize, per rank): {result['crossover_hidden']}")
    print(f"-> {args.out}, {args.out.with_suffix('.png')} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
