"""Time what the adapter zoo saves: swapping one adapter for another in a live model vs loading a whole fine-tuned
checkpoint into it; write bench/zoo_switch.json (`make bench-zoo`, after `make repro`).

Both sides start from files on disk (warm page cache) and end with a model ready to predict:
- switch: `switch_adapter(live, models/zoo/<d>)`: read the adapter's config and tensors, check them, copy the
  LoRA factors into the model that already holds another adapter (the frozen base stays where it is);
- full: `load_state(model, read_safetensors(<a whole checkpoint>))` (models/pretrained.safetensors: a fully
  fine-tuned one has the same tensors): read and copy all 2.8 M weights, as a
  deployment of full fine-tuned models would on every switch.
Each is repeated (`--repeat`, default 200) cycling through the zoo's digits; medians and quartiles in milliseconds.
Times depend on the machine and its load: they are recorded with the CPU name, never asserted by tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lora_mnist.artifacts import read_safetensors, write_json  # noqa: E402
from lora_mnist.base.model import load_model, load_state  # noqa: E402
from lora_mnist.config import load_params  # noqa: E402
from lora_mnist.lora.adapter import load_adapter, switch_adapter  # noqa: E402
from lora_mnist.lora.peft_format import adapter_bytes  # noqa: E402
from lora_mnist.numerics import cpu_identity  # noqa: E402


def timed(fn: Callable[[int], object], repeat: int) -> list[float]:
    """Wall time of each of `repeat` calls of fn(i), in milliseconds."""
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summary(times: list[float]) -> dict[str, float]:
    """Median and quartiles, in milliseconds to the microsecond."""
    q1, _, q3 = statistics.quantiles(times, n=4)
    return {"median_ms": round(statistics.median(times), 3), "q1_ms": round(q1, 3), "q3_ms": round(q3, 3)}


def main() -> None:
    """Time both sides, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "zoo_switch.json")
    args = parser.parse_args()
    import torch  # on every core, as the stages run
    digits = list(load_params(ROOT / "params.yaml").zoo.digits)
    zoo = [ROOT / "models" / "zoo" / str(d) for d in digits]
    # A fully fine-tuned checkpoint has the pretrained one's tensors and size (experiments no longer store one).
    pretrained = full = ROOT / "models" / "pretrained.safetensors"
    live = load_model(pretrained)
    load_adapter(live, zoo[0])
    switch_adapter(live, zoo[-1])  # warm up: first-call allocations and imports
    switch = timed(lambda i: switch_adapter(live, zoo[i % len(zoo)]), args.repeat)
    model = load_model(full)
    full_times = timed(lambda i: load_state(model, read_safetensors(full, framework="pt")[0], full), args.repeat)
    result = {
        **cpu_identity(), "torch_threads": torch.get_num_threads(), "repeat": args.repeat, "digits": digits,
        "switch_adapter": summary(switch), "load_full_checkpoint": summary(full_times),
        "speedup_median": round(statistics.median(full_times) / statistics.median(switch), 1),
        "adapter_bytes_median": statistics.median(adapter_bytes(d) for d in zoo),
        "full_model_bytes": full.stat().st_size,
    }
    write_json(args.out, result)
    print(args.out.read_text(), end="")


if __name__ == "__main__":
    main()
