"""DVC stage `select_target`: the target digit, from the pretrained model's per-digit errors on the chosen split,
and the indices of its training images (numpy only)."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "pretrain_metrics", "selection_out", "indices_out", "set_out")
    from lora_mnist.config import load_params

    params = load_params()
    from lora_mnist.base.select_target import select_target

    print(select_target(params.target, args.data, args.pretrain_metrics, args.selection_out, args.indices_out,
                        args.set_out))


if __name__ == "__main__":
    run_stage(main)
