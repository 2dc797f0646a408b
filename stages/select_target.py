"""DVC stage `select_target`: the target digit, from the pretrained model's per-digit errors on the chosen split."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "pretrain_metrics", "metrics_out")

    from lora_mnist.config import load_params

    params = load_params()

    from lora_mnist.artifacts import json_field, write_json
    from lora_mnist.comparison import per_digit, read_per_digit
    from lora_mnist.selection import choose_target

    # pretrain counted them; reading them here keeps this stage free of torch (~2 s).
    split = params.target.select_on
    chosen_on = read_per_digit(args.pretrain_metrics, split, "wrong")
    test_wrong = read_per_digit(args.pretrain_metrics, "test", "wrong")
    digit = choose_target(chosen_on, params.target.digit)
    # The base model's test results travel on from here, not from pretrain's file: its numerics record
    # (thread count...) may change without the results changing, and must not re-run finetune_full.
    write_json(args.metrics_out, {
        "accuracy": json_field(args.pretrain_metrics, "test", "accuracy"), "wrong": per_digit(test_wrong),
        "target": {"digit": digit, "mode": "auto" if params.target.digit == "auto" else "fixed",
                   "chosen_on": split, "wrong": chosen_on[digit]},
        "chosen_on_wrong": per_digit(chosen_on),
    })
    print(f"select_target: wrong per digit on the {split} set {chosen_on}, target digit {digit}")


if __name__ == "__main__":
    run_stage(main)
