"""DVC stage `analyze`: singular values of the full fine-tuning update vs the LoRA update, per layer."""

from pathlib import Path

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "pretrained", "full", "adapter", "metrics_out", "plots_out")

    from lora_mnist.adapter import load_adapter
    from lora_mnist.analysis import layer_updates, update_stats
    from lora_mnist.artifacts import atomic_dir, write_json
    from lora_mnist.checkpoint import load_model
    from lora_mnist.report import count_parameters
    from lora_mnist.plots import write_spectra

    base, full, lora_model = load_model(args.pretrained), load_model(args.full), load_model(args.pretrained)
    load_adapter(lora_model, args.adapter)
    layers, spectra = {}, {}
    for name, deltas in layer_updates(base, full, lora_model).items():
        w0 = getattr(base, name).weight.detach()
        results = {kind: update_stats(delta, w0) for kind, delta in deltas.items()}
        layers[name] = {kind: stats for kind, (stats, _) in results.items()}
        spectra[name] = {kind: top for kind, (_, top) in results.items()}
    adapter_bytes = sum(p.stat().st_size for p in Path(args.adapter).iterdir())
    metrics = {
        "layers": layers,
        "size": {
            "lora": {"trainable_params": count_parameters(lora_model).lora, "bytes": adapter_bytes},
            "full": {"trainable_params": sum(p.numel() for p in base.parameters()),
                     "bytes": Path(args.full).stat().st_size},
        },
    }
    with atomic_dir(args.plots_out) as tmp:
        write_spectra(tmp, spectra)
    write_json(args.metrics_out, metrics)
    summary = ", ".join(f"{n} full rank_90 {v['full']['rank_90']}" for n, v in layers.items())
    print(f"analyze: {summary}; adapter {adapter_bytes:,} bytes vs full model {metrics['size']['full']['bytes']:,}")


if __name__ == "__main__":
    run_stage(main)
