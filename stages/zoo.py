"""DVC stage `zoo`: one LoRA adapter per digit of zoo.digits and one for the two zoo.compose digits, on the same
frozen base, in PEFT's format; each scored on the test set, the two digits' adapters summed vs trained together."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data_root", "pretrained", "base_logits", "zoo_out", "metrics_out", "headline_out",
                       "numerics_out", "heatmap_out")
    from lora_mnist.config import load_params

    params = load_params()
    from lora_mnist.numerics import pin

    pin(params.numerics)  # before numpy or torch loads
    from lora_mnist.lora.zoo import zoo

    print(zoo(params.device, params.numerics, params.zoo, params.target.select_on, **vars(args)))


if __name__ == "__main__":
    run_stage(main)
