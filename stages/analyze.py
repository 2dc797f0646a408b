"""DVC stage `analyze`: singular values of the full fine-tuning update vs the LoRA update, per layer."""

from pathlib import Path

from lora_mnist.cli import parse_paths, run_stage
from lora_mnist.cpu import pin_blas


def main() -> None:
    args = parse_paths(__doc__, "pretrained", "full", "adapter", "metrics_out", "plots_out")
    pin_blas()  # before numpy loads OpenBLAS: the SVDs and norms then round the same on every machine

    # numpy only: the updates are differences and products of stored tensors, no model has to run.
    from lora_mnist.analysis import layer_updates, update_stats
    from lora_mnist.artifacts import atomic_dir, write_json
    from lora_mnist.integrity import read_safetensors
    from lora_mnist.names import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_settings, read_adapter_config
    from lora_mnist.plots import write_spectra

    base, _ = read_safetensors(args.pretrained)
    full, _ = read_safetensors(args.full)
    adapter_dir = Path(args.adapter)
    settings = adapter_settings(read_adapter_config(adapter_dir), adapter_dir / ADAPTER_CONFIG)
    adapter, _ = read_safetensors(adapter_dir / ADAPTER_WEIGHTS)
    layers, spectra = {}, {}
    sources = (args.pretrained, args.full, str(adapter_dir / ADAPTER_WEIGHTS))
    for name, deltas in layer_updates(base, full, adapter, settings, sources).items():
        w0 = base[f"{name}.weight"]
        results = {kind: update_stats(delta, w0) for kind, delta in deltas.items()}
        layers[name] = {kind: stats for kind, (stats, _) in results.items()}
        spectra[name] = {kind: top for kind, (_, top) in results.items()}
    adapter_bytes = sum(p.stat().st_size for p in adapter_dir.iterdir())
    metrics = {
        "layers": layers,
        "size": {
            "lora": {"trainable_params": sum(t.size for t in adapter.values()), "bytes": adapter_bytes},
            "full": {"trainable_params": sum(t.size for t in base.values()), "bytes": Path(args.full).stat().st_size},
        },
    }
    with atomic_dir(args.plots_out) as tmp:
        write_spectra(tmp, spectra)
    write_json(args.metrics_out, metrics)
    summary = ", ".join(f"{n} full rank_90 {v['full']['rank_90']}" for n, v in layers.items())
    print(f"analyze: {summary}; adapter {adapter_bytes:,} bytes vs full model {metrics['size']['full']['bytes']:,}")


if __name__ == "__main__":
    run_stage(main)
