"""DVC stage `finetune`: LoRA on the frozen pretrained model, trained on the target digit only."""

import argparse

from lora_mnist.cli import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("data", "model", "indices", "adapter_out", "finetuned_out", "metrics_out", "plots_out"):
        parser.add_argument(name)
    args = parser.parse_args()

    from lora_mnist.config import load_params

    params = load_params()

    import json

    from lora_mnist.adapter import save_adapter
    from lora_mnist.artifacts import write_json
    from lora_mnist.checkpoint import load_model, save_tensors
    from lora_mnist.data import load_split
    from lora_mnist.integrity import read_safetensors
    from lora_mnist.lora import apply_lora, count_parameters, freeze_non_lora, trainable_parameter_names
    from lora_mnist.plots import write_losses
    from lora_mnist.runtime import generator, configure_torch, resolve_device
    from lora_mnist.selection import check_enough
    from lora_mnist.train import train

    device = resolve_device(params.device)
    configure_torch()
    cfg, lora = params.finetune, params.lora
    arrays, meta = read_safetensors(args.indices, framework="pt")
    indices, digit = arrays["indices"], int(meta["digit"])
    check_enough(len(indices), digit, cfg.batch_size)
    images, labels = load_split(args.data, "train")
    model = load_model(args.model)
    gen = generator(cfg.seed)  # draws the LoRA A init first, then every shuffle
    apply_lora(model, lora.targets, lora.rank, lora.alpha, lora.init, lora.scaling, generator=gen)
    freeze_non_lora(model)
    model.to(device)
    losses = train(
        model, images[indices].to(device), labels[indices].to(device), batch_size=cfg.batch_size,
        steps=cfg.steps, lr=cfg.lr, generator=gen, desc="finetune",
    )
    trainable = trainable_parameter_names(model)
    save_adapter(model, args.adapter_out)
    save_tensors(model.state_dict(), args.finetuned_out, {"trainable": json.dumps(trainable)})
    write_losses(args.plots_out, losses)
    counts = count_parameters(model)
    write_json(args.metrics_out, {
        "device": device.type, "steps": cfg.steps, "train_size": len(indices), "digit": digit,
        "loss": {"first": losses[0], "last": losses[-1]},
        "param_count": {"original": counts.original, "lora": counts.lora, "increment_pct": counts.increment_pct},
    })
    print(f"finetune: {cfg.steps} steps on {len(indices)} images of digit {digit} ({device.type}), "
          f"rank {lora.rank}, {counts.lora:,} LoRA params, loss {losses[0]:.4f} -> {losses[-1]:.4f}")


if __name__ == "__main__":
    run_stage(main)
