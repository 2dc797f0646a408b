"""DVC stage `evaluate`: base vs LoRA on the test set, as metrics and plots; LoRA switched off must be the base."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "pretrained", "lora", "selection", "metrics_out", "headline_out",
                       "numerics_out", "bars_out", "confusion_base_out", "confusion_lora_out")
    from lora_mnist.config import load_params

    params = load_params()

    from lora_mnist.artifacts import json_field, write_json
    from lora_mnist.lora_eval import evaluate_lora
    from lora_mnist.figures import write_wrong_bars
    from lora_mnist.plots import write_confusion
    from lora_mnist.runtime import configure_torch, numerics, resolve_device
    from lora_mnist.summary import evaluate_headline

    device = resolve_device(params.device)
    configure_torch(device)
    digit = int(json_field(args.selection, "target", "digit"))
    result = evaluate_lora(args.data, args.pretrained, args.lora, digit, device)
    # The split whose errors chose the digit; every number here is on the test set.
    result.metrics["target"]["chosen_on"] = json_field(args.selection, "target", "chosen_on")
    write_confusion(args.confusion_base_out, result.labels, result.predictions["base"])
    write_confusion(args.confusion_lora_out, result.labels, result.predictions["lora"])
    write_wrong_bars(args.bars_out, result.wrong, digit)
    write_json(args.metrics_out, result.metrics)
    write_json(args.headline_out, evaluate_headline(result.metrics))
    write_json(args.numerics_out, numerics(device))
    acc, wrong = result.metrics["accuracy"], result.wrong
    print(f"evaluate: accuracy {acc['base']:.4f} -> {acc['lora']:.4f}, digit {digit} wrong "
          f"{wrong['base'][digit]} -> {wrong['lora'][digit]}")


if __name__ == "__main__":
    run_stage(main)
