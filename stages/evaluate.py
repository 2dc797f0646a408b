"""DVC stage `evaluate`: base vs LoRA on the test set, as metrics and plots; LoRA switched off must be the base."""


from pathlib import Path

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(
        __doc__, "data", "pretrained", "lora", "selection", "metrics_out", "headline_out", "numerics_out",
        "bars_out", "confusion_base_out", "confusion_lora_out",
    )

    from lora_mnist.config import load_params

    params = load_params()

    from dataclasses import asdict

    import torch

    from lora_mnist.adapter import load_adapter
    from lora_mnist.artifacts import json_field, write_json
    from lora_mnist.checkpoint import load_model, load_state
    from lora_mnist.data import load_split
    from lora_mnist.errors import ArtifactError
    from lora_mnist.evaluate import accuracy, digit_totals, logits, predict, wrong_counts
    from lora_mnist.integrity import read_safetensors
    from lora_mnist.lora import lora_disabled
    from lora_mnist.names import FINETUNED
    from lora_mnist.report import count_parameters
    from lora_mnist.plots import write_confusion, write_wrong_bars
    from lora_mnist.report import compare
    from lora_mnist.runtime import configure_torch, numerics, resolve_device
    from lora_mnist.summary import evaluate_headline

    device = resolve_device(params.device)
    configure_torch(device)
    digit, chosen_on = int(json_field(args.selection, "target", "digit")), json_field(args.selection, "target", "chosen_on")
    images, labels = load_split(args.data, "test")
    base, lora_model = load_model(args.pretrained), load_model(args.pretrained)
    load_adapter(lora_model, args.lora)  # the LoRA layout, as the adapter's config says
    # ...then the fine-tuned model's own tensors, frozen originals included: switching LoRA off must give
    # back exactly the pretrained model (the seed's third test), whatever fine-tuning did.
    finetuned = Path(args.lora) / FINETUNED
    load_state(lora_model, read_safetensors(finetuned, framework="pt")[0], finetuned)
    images = images.to(device)
    base_logits = logits(base.to(device), images)  # (n, 10)
    with lora_disabled(lora_model):
        off_logits = logits(lora_model.to(device), images)
    if not torch.equal(off_logits, base_logits):  # the adapter must only ever add to the frozen weights
        raise ArtifactError(f"{finetuned}: with LoRA switched off, the logits differ from the pretrained model's "
                            f"(max abs diff {(off_logits - base_logits).abs().max():.6g})")
    preds = {"base": base_logits.argmax(dim=1), "lora": predict(lora_model, images)}
    wrong = {name: wrong_counts(labels, p) for name, p in preds.items()}
    metrics = {
        "device": device.type,
        **compare(digit_totals(labels), {name: accuracy(labels, p) for name, p in preds.items()}, wrong, digit),
        "param_count": asdict(count_parameters(lora_model)),  # original, lora, increment_pct
        "checks": {"lora_off_logits_equal_pretrained": True},  # checked above, on every test image
    }
    write_confusion(args.confusion_base_out, labels.tolist(), preds["base"].tolist())
    write_confusion(args.confusion_lora_out, labels.tolist(), preds["lora"].tolist())
    write_wrong_bars(args.bars_out, wrong, digit)
    metrics["target"]["chosen_on"] = chosen_on  # the split whose errors chose the digit; every number here is test
    write_json(args.metrics_out, metrics)
    write_json(args.headline_out, evaluate_headline(metrics))
    write_json(args.numerics_out, numerics(device))
    acc = metrics["accuracy"]
    print(f"evaluate: accuracy {acc['base']:.4f} -> {acc['lora']:.4f}, digit {digit} wrong "
          f"{wrong['base'][digit]} -> {wrong['lora'][digit]}")


if __name__ == "__main__":
    run_stage(main)
