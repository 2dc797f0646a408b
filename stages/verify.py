"""DVC stage `verify`: prove the original weights never moved (exit 1 naming the tensor if one did)."""

from pathlib import Path

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "snapshot", "manifest", "pretrained", "lora", "metrics_out", "headline_out")

    from lora_mnist.artifacts import json_field, write_json
    from lora_mnist.errors import ArtifactError
    from lora_mnist.integrity import read_safetensors
    from lora_mnist.names import ADAPTER_CONFIG, ADAPTER_WEIGHTS, FINETUNED, adapter_settings, read_adapter_config
    from lora_mnist.summary import verify_headline
    from lora_mnist.verify import (
        Report, adapter_factors, check_adapter_config, check_manifest, check_same, check_trainable, finetuned_base,
        recorded_trainable,
    )

    report = Report()
    snapshot, _ = read_safetensors(args.snapshot)
    manifest = json_field(args.manifest, "tensors")
    report.record("snapshot_manifest", check_manifest(snapshot, manifest, args.snapshot))
    pretrained, _ = read_safetensors(args.pretrained)
    report.record("pretrained_equals_snapshot", check_same(report, args.pretrained, pretrained, snapshot))
    lora_dir = Path(args.lora)
    finetuned, meta = read_safetensors(lora_dir / FINETUNED)
    base = finetuned_base(finetuned)
    report.record("finetuned_base_equals_snapshot", check_same(report, lora_dir / FINETUNED, base, snapshot))
    recorded = recorded_trainable(meta, lora_dir / FINETUNED)
    report.record("trainable_is_lora", check_trainable(recorded, finetuned))
    adapter, _ = read_safetensors(lora_dir / ADAPTER_WEIGHTS)
    report.record("adapter_equals_finetuned", check_same(
        report, lora_dir / ADAPTER_WEIGHTS, adapter, adapter_factors(finetuned), "the fine-tuned model's"))
    config = lora_dir / ADAPTER_CONFIG
    report.record("adapter_config_matches", check_adapter_config(
        adapter_settings(read_adapter_config(lora_dir), config), finetuned, config))

    metrics = report.as_metrics()
    write_json(args.metrics_out, metrics)
    write_json(args.headline_out, verify_headline(metrics))
    if report.failures:
        raise ArtifactError("verify failed:\n  " + "\n  ".join(report.failures))
    print(f"verify: passed, {report.tensors_checked} tensors equal bit for bit (originals to the snapshot, "
          f"adapter to the fine-tuned LoRA factors); adapter config matches them")


if __name__ == "__main__":
    run_stage(main)
