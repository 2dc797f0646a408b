"""DVC stage `finetune_full`: the baseline LoRA is measured against: fine-tune ALL weights, same data and steps."""

from pathlib import Path

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "model", "indices", "base_metrics", "model_out", "metrics_out", "headline_out",
                      "numerics_out", "loss_out")

    from lora_mnist.config import load_params

    params = load_params()

    from lora_mnist.artifacts import json_field, write_json
    from lora_mnist.checkpoint import load_model, save_model
    from lora_mnist.data import load_split
    from lora_mnist.evaluate import accuracy, digit_totals, predict, wrong_counts
    from lora_mnist.finetuning import finetune, load_finetune_set
    from lora_mnist.plots import write_losses
    from lora_mnist.errors import ArtifactError
    from lora_mnist.report import compare, read_per_digit
    from lora_mnist.runtime import configure_torch, numerics, resolve_device
    from lora_mnist.summary import full_headline

    device = resolve_device(params.device)
    configure_torch(device)
    cfg = params.finetune
    # The base model's test results were computed once, by pretrain (read first: a bad file fails fast).
    base_wrong = read_per_digit(args.base_metrics, "wrong")
    base_accuracy = json_field(args.base_metrics, "accuracy")
    if isinstance(base_accuracy, bool) or not isinstance(base_accuracy, (int, float)):
        raise ArtifactError(f"{args.base_metrics}: accuracy = {base_accuracy!r} is not a number")
    data = load_finetune_set(args.data, args.indices, cfg)
    model = load_model(args.model)  # every parameter stays trainable
    losses = finetune(model.to(device), data, cfg, device, desc="finetune_full")
    save_model(model, args.model_out)
    write_losses(args.loss_out, losses)

    images, labels = load_split(args.data, "test")
    preds = predict(model, images.to(device))
    wrong = {"base": base_wrong, "full": wrong_counts(labels, preds)}
    result = compare(digit_totals(labels), {"base": base_accuracy, "full": accuracy(labels, preds)}, wrong, data.digit)
    n_params = sum(p.numel() for p in model.parameters())
    metrics = {
        "device": device.type, "steps": cfg.steps, "replay": cfg.replay, **result,
        "loss": {"first": losses[0], "last": losses[-1]},
        "trainable_params": n_params, "checkpoint_bytes": Path(args.model_out).stat().st_size,
    }
    write_json(args.metrics_out, metrics)
    write_json(args.headline_out, full_headline(metrics))
    write_json(args.numerics_out, numerics(device))
    acc = result["accuracy"]
    print(f"finetune_full: {cfg.steps} steps, all {n_params:,} params; accuracy {acc['base']:.4f} -> "
          f"{acc['full']:.4f}, digit {data.digit} wrong {base_wrong[data.digit]} -> {wrong['full'][data.digit]}")


if __name__ == "__main__":
    run_stage(main)
