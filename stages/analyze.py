"""DVC stage `analyze`: the LoRA update's spectrum and size beside full fine-tuning's (from analyze_full).

No plot here: a rank-r update has r singular values (in the metrics), and matplotlib's import would cost every
LoRA experiment about a second; the full fine-tuning spectrum is analyze_full's plot.
"""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "pretrained", "lora", "full_metrics", "metrics_out", "numerics_out")
    from lora_mnist.cpu import blas_numerics, pin_blas

    pin_blas()  # before numpy loads OpenBLAS: the QRs and norms then round the same on every machine

    # numpy only, and cheap: the LoRA update's singular values come from its r x r core (analysis.py).
    from lora_mnist.analysis import lora_vs_full
    from lora_mnist.artifacts import write_json

    metrics = lora_vs_full(args.pretrained, args.lora, args.full_metrics)
    write_json(args.metrics_out, metrics)
    write_json(args.numerics_out, blas_numerics())
    ranks = [layer["lora"]["rank_99"] for layer in metrics["layers"].values()]
    print(f"analyze: LoRA rank_99 {ranks}, adapter {metrics['size']['lora']['bytes']:,} bytes")


if __name__ == "__main__":
    run_stage(main)
