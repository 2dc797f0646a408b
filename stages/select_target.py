"""DVC stage `select_target`: the target digit, from the pretrained model's per-digit test errors."""


from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "pretrain_metrics", "metrics_out")

    from lora_mnist.config import load_params

    params = load_params()

    from lora_mnist.artifacts import json_field, write_json
    from lora_mnist.report import per_digit, read_per_digit
    from lora_mnist.selection import choose_target

    # pretrain counted them on the test set; reading them here keeps this stage free of torch (~2 s).
    wrong = read_per_digit(args.pretrain_metrics, "test", "wrong")
    accuracy = json_field(args.pretrain_metrics, "test", "accuracy")
    digit = choose_target(wrong, params.target.digit)
    # The base model's test results travel on from here, not from pretrain's file: its numerics record
    # (thread count...) may change without the results changing, and must not re-run finetune_full.
    write_json(args.metrics_out, {
        "accuracy": accuracy, "wrong": per_digit(wrong),
        "target": {"digit": digit, "mode": "auto" if params.target.digit == "auto" else "fixed",
                   "wrong": wrong[digit]},
    })
    print(f"select_target: wrong per digit {wrong}, target digit {digit}")


if __name__ == "__main__":
    run_stage(main)
