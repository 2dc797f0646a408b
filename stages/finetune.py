"""DVC stage `finetune`: LoRA on the frozen pretrained model, trained on the target digit only."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "model", "indices", "lora_out", "metrics_out", "numerics_out", "loss_out")
    from lora_mnist.config import load_params

    params = load_params()

    from dataclasses import asdict

    from lora_mnist.artifacts import write_json
    from lora_mnist.comparison import count_parameters
    from lora_mnist.finetuning import finetune_lora, load_finetune_set, save_lora_outputs
    from lora_mnist.plots import write_losses
    from lora_mnist.runtime import configure_torch, numerics, resolve_device
    from lora_mnist.selection import replay_count

    device = resolve_device(params.device)
    configure_torch(device)
    cfg, lora = params.finetune, params.lora
    data = load_finetune_set(args.data, args.indices, cfg)
    model, losses = finetune_lora(args.model, data, cfg, lora, device)
    save_lora_outputs(model, args.lora_out)
    write_losses(args.loss_out, losses)
    counts = count_parameters(model)
    write_json(args.metrics_out, {
        "device": device.type, "steps": cfg.steps, "train_size": data.n_target, "digit": data.digit,
        "replay": cfg.replay, "replay_per_batch": replay_count(cfg.replay, cfg.batch_size),
        "loss": {"first": losses[0], "last": losses[-1]}, "param_count": asdict(counts),
    })
    write_json(args.numerics_out, numerics(device))
    print(f"finetune: {cfg.steps} steps on {data.n_target} images of digit {data.digit} ({device.type}), "
          f"rank {lora.rank}, {counts.lora:,} LoRA params, loss {losses[0]:.4f} -> {losses[-1]:.4f}")


if __name__ == "__main__":
    run_stage(main)
