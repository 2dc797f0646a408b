"""DVC stage `snapshot`: a copy of the original weights and a manifest of per-tensor sha256."""

import argparse
import shutil

from lora_mnist.cli import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("model", "snapshot_out", "manifest_out"):
        parser.add_argument(name)
    args = parser.parse_args()

    from lora_mnist.artifacts import atomic_path, write_json
    from lora_mnist.integrity import tensor_digests

    with atomic_path(args.snapshot_out) as tmp:
        shutil.copyfile(args.model, tmp)
    digests = tensor_digests(args.snapshot_out)
    write_json(args.manifest_out, {"algorithm": "sha256", "tensors": digests})
    print(f"snapshot: {len(digests)} tensors of {args.model} -> {args.snapshot_out}, manifest {args.manifest_out}")


if __name__ == "__main__":
    run_stage(main)
