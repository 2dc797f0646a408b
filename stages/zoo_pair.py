"""DVC stage `zoo_pair`: one LoRA adapter trained on both zoo.compose digits together, the yardstick for summing
the two digits' own adapters."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "model", "adapter_out")
    from lora_mnist.config import load_params

    params = load_params()

    from lora_mnist.runtime import configure_torch, resolve_device
    from lora_mnist.zoo import make_adapter

    device = resolve_device(params.device)
    configure_torch(device)
    digits = list(params.zoo.compose)
    record = make_adapter(args.data, args.model, digits, params.target.select_on, params.finetune, params.lora,
                          device, args.adapter_out, knob="zoo.compose")
    print(f"zoo_pair: adapter for digits {digits}, {params.finetune.steps} steps on {record['train_size']} images, "
          f"loss {record['loss']['first']:.4f} -> {record['loss']['last']:.4f} -> {args.adapter_out}")


if __name__ == "__main__":
    run_stage(main)
