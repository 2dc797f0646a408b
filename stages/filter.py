"""DVC stage `filter`: indices of the target digit's training images (never the held-out validation ones)."""


from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "selection", "indices_out", "metrics_out")

    import numpy as np
    from safetensors.numpy import save

    from lora_mnist.artifacts import json_field, write_bytes, write_json
    from lora_mnist.idx import raw_dir, read_idx
    from lora_mnist.integrity import canonical_safetensors
    from lora_mnist.selection import fine_tuning_pool, target_indices

    digit = int(json_field(args.selection, "target", "digit"))
    labels = read_idx(raw_dir(args.data) / "train-labels-idx1-ubyte")
    # With target.select_on = validation, the last images chose the target: fine-tuning must not see them.
    labels = fine_tuning_pool(labels, json_field(args.selection, "target", "chosen_on"))
    indices = target_indices(labels, digit)
    others = np.flatnonzero(labels != digit).astype(np.int64)  # the pool finetune.replay draws from
    tensors = {"indices": indices, "others": others}
    write_bytes(args.indices_out, canonical_safetensors(save(tensors)))
    write_json(args.metrics_out, {"digit": digit, "size": len(indices), "others": len(others), "pool": len(labels)})
    print(f"filter: {len(indices)} training images of digit {digit} -> {args.indices_out}")


if __name__ == "__main__":
    run_stage(main)
