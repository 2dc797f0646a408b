"""DVC stage `verify`: prove the original weights never moved, for the LoRA adapter and every zoo adapter (exit 1
naming the tensor if one did). numpy only."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "snapshot", "manifest", "pretrained", "selection", "lora_dir", "zoo_dir",
                       "metrics_out", "headline_out")
    from lora_mnist.config import load_params

    params = load_params()
    from lora_mnist.verify import verify

    print(verify(params.zoo.digits, params.zoo.compose, **vars(args)))


if __name__ == "__main__":
    run_stage(main)
