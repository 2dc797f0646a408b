"""DVC stage `snapshot`: a copy of the original weights and a manifest of per-tensor sha256 (numpy only)."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "model", "snapshot_out", "manifest_out")
    from lora_mnist.verify import take_snapshot

    print(take_snapshot(args.model, args.snapshot_out, args.manifest_out))


if __name__ == "__main__":
    run_stage(main)
