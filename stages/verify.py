"""DVC stage `verify`: prove the original weights never moved (exit 1 naming the tensor if one did)."""

import json

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "snapshot", "manifest", "pretrained", "finetuned", "adapter", "metrics_out")

    import torch

    from lora_mnist.adapter import load_adapter
    from lora_mnist.artifacts import read_json, write_json
    from lora_mnist.checkpoint import load_model, load_state
    from lora_mnist.data import load_split
    from lora_mnist.errors import ArtifactError
    from lora_mnist.integrity import read_safetensors
    from lora_mnist.lora import freeze_non_lora, lora_disabled, trainable_parameter_names
    from lora_mnist.verify import Report, check_manifest, check_same, check_trainable, finetuned_base

    report = Report()
    snapshot, _ = read_safetensors(args.snapshot)
    report.record("snapshot_manifest", check_manifest(snapshot, read_json(args.manifest)["tensors"], args.snapshot))
    report.record("pretrained_equals_snapshot",
                  check_same(report, args.pretrained, read_safetensors(args.pretrained)[0], snapshot))
    finetuned, meta = read_safetensors(args.finetuned)
    report.record("finetuned_base_equals_snapshot", check_same(report, args.finetuned, finetuned_base(finetuned), snapshot))
    report.record("trainable_is_lora", check_trainable(json.loads(meta.get("trainable", "[]")), finetuned))

    # Rebuild the fine-tuned model the way finetune built it: pretrained + adapter config, then its exact state.
    base, model = load_model(args.pretrained), load_model(args.pretrained)
    load_adapter(model, args.adapter)
    adapter_state = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    state, _ = read_safetensors(args.finetuned, framework="pt")
    load_state(model, state, args.finetuned)
    report.record("adapter_equals_finetuned", [
        f"{args.adapter}: tensor {k} differs from the fine-tuned model's" for k, v in adapter_state.items()
        if not torch.equal(v, state[k])
    ])
    freeze_non_lora(model)
    recorded = json.loads(meta.get("trainable", "[]"))
    report.record("freeze_gives_same_trainable", [] if trainable_parameter_names(model) == recorded else [
        f"trainable: freezing gives {trainable_parameter_names(model)}, fine-tuning recorded {recorded}"])
    images, _ = load_split(args.data, "test")
    with torch.inference_mode(), lora_disabled(model):
        off, ref = model.eval()(images), base.eval()(images)
    report.record("lora_off_logits_equal_pretrained", [] if torch.equal(off, ref) else [
        f"logits: LoRA-off logits differ from the pretrained model's (max abs diff {(off - ref).abs().max():.6g})"])

    write_json(args.metrics_out, report.as_metrics())
    if report.failures:
        raise ArtifactError("verify failed:\n  " + "\n  ".join(report.failures))
    print(f"verify: passed, {report.tensors_checked} tensors equal to the snapshot bit for bit, "
          f"LoRA-off logits equal the pretrained model's on {len(images)} test images")


if __name__ == "__main__":
    run_stage(main)
