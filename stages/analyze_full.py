"""DVC stage `analyze_full`: singular values of the full fine-tuning update, per layer (LoRA changes never re-run it)."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "pretrained", "full", "metrics_out", "numerics_out", "png_out", "spectrum1_out",
                       "spectrum2_out", "spectrum3_out")
    from lora_mnist.cpu import blas_numerics, pin_blas

    pin_blas()  # before numpy loads OpenBLAS: the SVDs and norms then round the same on every machine

    from lora_mnist.analysis import full_report
    from lora_mnist.artifacts import write_json
    from lora_mnist.figures import write_spectra_png
    from lora_mnist.plots import spectrum_rows

    metrics, tops = full_report(args.pretrained, args.full)
    for top, out in zip(tops.values(), (args.spectrum1_out, args.spectrum2_out, args.spectrum3_out)):
        write_json(out, spectrum_rows(top))
    write_spectra_png(args.png_out, {name: {"full fine-tuning": top} for name, top in tops.items()})
    write_json(args.metrics_out, metrics)
    write_json(args.numerics_out, blas_numerics())
    print("analyze_full: " + ", ".join(f"{n} rank_90 {s['rank_90']}" for n, s in metrics["layers"].items()))


if __name__ == "__main__":
    run_stage(main)
