"""DVC stage `zoo` (one entry per digit of zoo.digits): a LoRA adapter trained on that digit's images only, on
the same frozen pretrained model, saved in PEFT's format with a record of what was trained."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "model", "digit", "adapter_out")
    from lora_mnist.config import load_params
    from lora_mnist.errors import ConfigError

    params = load_params()
    if not (args.digit.isdigit() and 0 <= int(args.digit) <= 9):
        raise ConfigError(f"zoo: digit {args.digit!r} is not a digit 0-9 (dvc.yaml passes one of zoo.digits)")
    digit = int(args.digit)

    from lora_mnist.runtime import configure_torch, resolve_device
    from lora_mnist.zoo import make_adapter

    device = resolve_device(params.device)
    configure_torch(device)
    record = make_adapter(args.data, args.model, [digit], params.target.select_on, params.finetune, params.lora,
                          device, args.adapter_out)
    print(f"zoo: adapter for digit {digit}, {params.finetune.steps} steps on {record['train_size']} images, "
          f"loss {record['loss']['first']:.4f} -> {record['loss']['last']:.4f} -> {args.adapter_out}")


if __name__ == "__main__":
    run_stage(main)
