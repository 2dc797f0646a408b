"""DVC stage `evaluate`: base vs LoRA on the test set, as metrics and plots."""

import argparse

from lora_mnist.cli import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("data", "pretrained", "adapter", "selection", "metrics_out", "plots_out", "confusion_out"):
        parser.add_argument(name)
    args = parser.parse_args()

    from lora_mnist.config import load_params

    params = load_params()

    import torch

    from lora_mnist.adapter import load_adapter
    from lora_mnist.artifacts import atomic_dir, read_json, write_json
    from lora_mnist.checkpoint import load_model
    from lora_mnist.data import load_split
    from lora_mnist.evaluate import accuracy, predict, wrong_counts
    from lora_mnist.lora import count_parameters
    from lora_mnist.plots import write_confusions, write_wrong_bars
    from lora_mnist.runtime import configure_torch, resolve_device
    from lora_mnist.report import forgetting, per_digit

    device = resolve_device(params.device)
    configure_torch()
    digit = int(read_json(args.selection)["target"]["digit"])
    images, labels = load_split(args.data, "test")
    base, lora_model = load_model(args.pretrained), load_model(args.pretrained)
    load_adapter(lora_model, args.adapter)
    preds = {name: predict(m.to(device), images.to(device)) for name, m in (("base", base), ("lora", lora_model))}
    wrong = {name: wrong_counts(labels, p) for name, p in preds.items()}
    counts = count_parameters(lora_model)
    metrics = {
        "device": device.type,
        "accuracy": {name: accuracy(labels, p) for name, p in preds.items()},
        "wrong": {name: per_digit(w) for name, w in wrong.items()},
        "target": {"digit": digit, "wrong_base": wrong["base"][digit], "wrong_lora": wrong["lora"][digit]},
        "forgetting": forgetting(torch.bincount(labels, minlength=10).tolist(), wrong, digit),
        "param_count": {"original": counts.original, "lora": counts.lora, "increment_pct": counts.increment_pct},
    }
    with atomic_dir(args.confusion_out) as tmp:
        write_confusions(tmp, labels.tolist(), {name: p.tolist() for name, p in preds.items()})
    with atomic_dir(args.plots_out) as tmp:
        write_wrong_bars(tmp, wrong, digit)
    write_json(args.metrics_out, metrics)
    acc = metrics["accuracy"]
    print(f"evaluate: accuracy {acc['base']:.4f} -> {acc['lora']:.4f}, digit {digit} wrong "
          f"{wrong['base'][digit]} -> {wrong['lora'][digit]}")


if __name__ == "__main__":
    run_stage(main)
