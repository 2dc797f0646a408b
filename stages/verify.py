"""DVC stage `verify`: prove the original weights never moved, for the fine-tuned model and every zoo adapter
(exit 1 naming the tensor if one did)."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "snapshot", "manifest", "pretrained", "lora", "zoo", "pair", "metrics_out",
                       "headline_out")
    from lora_mnist.config import load_params

    params = load_params()

    from pathlib import Path

    from lora_mnist.artifacts import write_json
    from lora_mnist.errors import ArtifactError
    from lora_mnist.proof import prove
    from lora_mnist.summary import verify_headline

    zoo = {Path(args.zoo) / str(digit): [digit] for digit in params.zoo.digits} | {Path(args.pair): list(params.zoo.compose)}
    proof = prove(args.snapshot, args.manifest, args.pretrained, args.lora, zoo)
    metrics = proof.as_metrics()
    write_json(args.metrics_out, metrics)  # written on failure too: it names what failed
    write_json(args.headline_out, verify_headline(metrics))
    if proof.failures:
        raise ArtifactError("verify failed:\n  " + "\n  ".join(proof.failures))
    print(f"verify: passed, {proof.tensors_checked} tensors equal bit for bit (originals to the snapshot, "
          f"adapter to the fine-tuned LoRA factors, {len(zoo)} zoo adapters to what was trained); configs match")


if __name__ == "__main__":
    run_stage(main)
