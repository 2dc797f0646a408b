"""DVC stage `finetune_full`: the baseline LoRA is measured against: fine-tune ALL weights, same data and steps."""

import argparse
from pathlib import Path

from lora_mnist.cli import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("data", "model", "indices", "selection", "model_out", "metrics_out", "plots_out"):
        parser.add_argument(name)
    args = parser.parse_args()

    from lora_mnist.config import load_params

    params = load_params()

    import torch

    from lora_mnist.artifacts import read_json, write_json
    from lora_mnist.checkpoint import load_model, save_model
    from lora_mnist.data import load_split
    from lora_mnist.evaluate import accuracy, predict, wrong_counts
    from lora_mnist.finetuning import finetune, load_finetune_set
    from lora_mnist.plots import write_losses
    from lora_mnist.report import forgetting, per_digit
    from lora_mnist.runtime import configure_torch, resolve_device

    device = resolve_device(params.device)
    configure_torch()
    cfg = params.finetune
    data = load_finetune_set(args.data, args.indices, cfg.batch_size)
    model = load_model(args.model)  # every parameter stays trainable
    losses = finetune(model.to(device), data, cfg, device, desc="finetune_full")
    save_model(model, args.model_out)
    write_losses(args.plots_out, losses)

    selection = read_json(args.selection)  # the base model's test results, computed once by select_target
    images, labels = load_split(args.data, "test")
    preds = predict(model, images.to(device))
    wrong = {"base": [selection["wrong"][str(d)] for d in range(10)], "full": wrong_counts(labels, preds)}
    digit = data.digit
    write_json(args.metrics_out, {
        "device": device.type, "steps": cfg.steps, "replay": cfg.replay,
        "loss": {"first": losses[0], "last": losses[-1]},
        "accuracy": {"base": selection["accuracy"], "full": accuracy(labels, preds)},
        "wrong": {name: per_digit(w) for name, w in wrong.items()},
        "target": {"digit": digit, "wrong_base": wrong["base"][digit], "wrong_full": wrong["full"][digit]},
        "forgetting": forgetting(torch.bincount(labels, minlength=10).tolist(), wrong, digit),
        "trainable_params": sum(p.numel() for p in model.parameters()),
        "checkpoint_bytes": Path(args.model_out).stat().st_size,
    })
    print(f"finetune_full: {cfg.steps} steps, all {sum(p.numel() for p in model.parameters()):,} params; accuracy "
          f"{selection['accuracy']:.4f} -> {accuracy(labels, preds):.4f}, digit {digit} wrong "
          f"{wrong['base'][digit]} -> {wrong['full'][digit]}")


if __name__ == "__main__":
    run_stage(main)
