"""DVC stage `select_target`: per-digit test errors of the pretrained model, and the target digit."""


from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "model", "metrics_out")

    from lora_mnist.config import load_params

    params = load_params()

    from lora_mnist.artifacts import write_json
    from lora_mnist.checkpoint import load_model
    from lora_mnist.data import load_split
    from lora_mnist.evaluate import accuracy, predict, wrong_counts
    from lora_mnist.runtime import configure_torch, resolve_device
    from lora_mnist.report import per_digit
    from lora_mnist.selection import choose_target

    device = resolve_device(params.device)
    configure_torch(device)
    images, labels = load_split(args.data, "test")
    preds = predict(load_model(args.model).to(device), images.to(device))
    wrong, acc = wrong_counts(labels, preds), accuracy(labels, preds)
    digit = choose_target(wrong, params.target.digit)
    write_json(args.metrics_out, {
        "device": device.type, "accuracy": acc, "wrong": per_digit(wrong),
        "target": {"digit": digit, "mode": "auto" if params.target.digit == "auto" else "fixed",
                   "wrong": wrong[digit]},
    })
    print(f"select_target: accuracy {acc:.4f}, wrong per digit {wrong}, target digit {digit}")


if __name__ == "__main__":
    run_stage(main)
