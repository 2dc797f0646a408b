"""DVC stage `zoo_pair`: one LoRA adapter trained on both zoo.compose digits together, the yardstick for summing
the two digits' own adapters."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "model", "adapter_out", "numerics_out")
    from lora_mnist.config import load_params

    params = load_params()

    from lora_mnist.artifacts import write_json
    from lora_mnist.runtime import configure_torch, numerics, resolve_device
    from lora_mnist.zoo import digits_set, save_zoo_adapter, train_adapter, training_record

    device = resolve_device(params.device)
    configure_torch(device)
    digits = list(params.zoo.compose)
    data = digits_set(args.data, digits, params.target.select_on, params.finetune.batch_size)
    model, losses = train_adapter(args.model, data, params.finetune, params.lora, device)
    save_zoo_adapter(model, args.adapter_out, training_record(model, data, losses))
    write_json(args.numerics_out, numerics(device))
    print(f"zoo_pair: adapter for digits {digits}, {params.finetune.steps} steps on {data.n_target} images, "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f} -> {args.adapter_out}")


if __name__ == "__main__":
    run_stage(main)
