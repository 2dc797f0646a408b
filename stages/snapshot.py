"""DVC stage `snapshot`: a copy of the original weights and a manifest of per-tensor sha256."""

import shutil

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "model", "snapshot_out", "manifest_out")

    from lora_mnist.artifacts import atomic_path, write_json
    from lora_mnist.integrity import tensor_digests

    with atomic_path(args.snapshot_out) as tmp:
        shutil.copyfile(args.model, tmp)
    digests = tensor_digests(args.snapshot_out)
    write_json(args.manifest_out, {"algorithm": "sha256", "tensors": digests})
    print(f"snapshot: {len(digests)} tensors of {args.model} -> {args.snapshot_out}, manifest {args.manifest_out}")


if __name__ == "__main__":
    run_stage(main)
