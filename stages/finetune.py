"""DVC stage `finetune`: LoRA on the frozen pretrained model, trained on the target digit only."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "model", "indices", "lora_out", "metrics_out", "numerics_out", "loss_out")

    from lora_mnist.config import load_params

    params = load_params()

    import json
    from dataclasses import asdict

    from lora_mnist.adapter import save_adapter
    from lora_mnist.artifacts import write_json
    from lora_mnist.checkpoint import load_model, model_bytes, safetensors_bytes
    from lora_mnist.config import replay_count
    from lora_mnist.finetuning import finetune, load_finetune_set
    from lora_mnist.lora import apply_lora, freeze_non_lora, merge, set_lora_impl, trainable_parameter_names
    from lora_mnist.names import FINETUNED, MERGED
    from lora_mnist.plots import write_losses
    from lora_mnist.report import count_parameters
    from lora_mnist.runtime import configure_torch, generator, numerics, resolve_device

    device = resolve_device(params.device)
    configure_torch(device)
    cfg, lora = params.finetune, params.lora
    data = load_finetune_set(args.data, args.indices, cfg)
    model = load_model(args.model)
    apply_lora(model, lora.targets, lora.rank, lora.alpha, lora.init, lora.scaling, generator=generator(cfg.seed))
    freeze_non_lora(model)
    set_lora_impl(model, lora.impl)  # how training computes the update; the adapter is the same either way
    losses = finetune(model.to(device), data, cfg, device, desc="finetune")
    trainable = trainable_parameter_names(model)
    # One output directory: the PEFT adapter, the whole fine-tuned model (for verify) and the merged export
    # (W + scale * B @ A: a plain RichBoyNet, no LoRA code needed), written in one atomic step.
    save_adapter(model, args.lora_out, extra={
        FINETUNED: safetensors_bytes(model.state_dict(), {"trainable": json.dumps(trainable)}),
        MERGED: model_bytes(merge(model)),
    })
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
