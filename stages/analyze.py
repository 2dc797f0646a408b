"""DVC stage `analyze`: the LoRA update's spectrum and size beside full fine-tuning's (from analyze_full)."""

from pathlib import Path

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "pretrained", "lora", "full_metrics", "metrics_out", "numerics_out", "png_out")
    from lora_mnist.cpu import blas_numerics, pin_blas

    pin_blas()  # before numpy loads OpenBLAS: the QRs and norms then round the same on every machine

    # numpy only, and cheap: the LoRA update's singular values come from its r x r core (analysis.py).
    from lora_mnist.analysis import lora_spectra
    from lora_mnist.artifacts import json_field, write_json
    from lora_mnist.integrity import read_safetensors
    from lora_mnist.names import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_settings, read_adapter_config
    from lora_mnist.plots import write_spectra_png

    base, _ = read_safetensors(args.pretrained)
    adapter_dir = Path(args.lora)  # the PEFT adapter files, beside the fine-tuned model
    settings = adapter_settings(read_adapter_config(adapter_dir), adapter_dir / ADAPTER_CONFIG)
    adapter, _ = read_safetensors(adapter_dir / ADAPTER_WEIGHTS)
    lora = lora_spectra(base, adapter, settings, (args.pretrained, str(adapter_dir / ADAPTER_WEIGHTS)))
    full_layers = json_field(args.full_metrics, "layers")
    full_spectra = json_field(args.full_metrics, "spectra")
    adapter_bytes = sum((adapter_dir / name).stat().st_size for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS))
    write_spectra_png(args.png_out, {n: {"full": full_spectra[n], "lora": top} for n, (_, top) in lora.items()})
    write_json(args.metrics_out, {
        "layers": {n: {"full": full_layers[n], "lora": stats} for n, (stats, _) in lora.items()},
        "size": {"lora": {"trainable_params": sum(t.size for t in adapter.values()), "bytes": adapter_bytes},
                 "full": json_field(args.full_metrics, "size")},
    })
    write_json(args.numerics_out, blas_numerics())
    print(f"analyze: LoRA rank_99 {[s['rank_99'] for s, _ in lora.values()]}, adapter {adapter_bytes:,} bytes")


if __name__ == "__main__":
    run_stage(main)
