"""DVC stage `finetune_full`: the baseline LoRA is measured against: fine-tune ALL weights, same data and steps."""

from pathlib import Path

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "model", "indices", "base_metrics", "model_out", "metrics_out", "headline_out",
                       "numerics_out", "loss_out")
    from lora_mnist.config import load_params

    params = load_params()

    from lora_mnist.artifacts import write_json
    from lora_mnist.checkpoint import save_model
    from lora_mnist.finetuning import finetune_all, load_finetune_set
    from lora_mnist.plots import write_losses
    from lora_mnist.runtime import configure_torch, numerics, resolve_device
    from lora_mnist.summary import full_headline

    device = resolve_device(params.device)
    configure_torch(device)
    data = load_finetune_set(args.data, args.indices, params.finetune)
    model, losses, metrics = finetune_all(args.model, data, params.finetune, args.base_metrics, args.data, device)
    save_model(model, args.model_out)
    write_losses(args.loss_out, losses)
    metrics["checkpoint_bytes"] = Path(args.model_out).stat().st_size
    write_json(args.metrics_out, metrics)
    write_json(args.headline_out, full_headline(metrics))
    write_json(args.numerics_out, numerics(device))
    acc, digit = metrics["accuracy"], data.digit
    print(f"finetune_full: {params.finetune.steps} steps, all {metrics['trainable_params']:,} params; accuracy "
          f"{acc['base']:.4f} -> {acc['full']:.4f}, digit {digit} wrong {metrics['target']['wrong_base']} -> "
          f"{metrics['target']['wrong_full']}")


if __name__ == "__main__":
    run_stage(main)
