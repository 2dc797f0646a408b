"""DVC stage `pretrain`: train RichBoyNet from scratch on the MNIST training images, then count its errors.

All 60,000 images with target.select_on = test (the seed); the first 50,000 with `validation`, whose last
10,000 it then scores for select_target. Its test-set errors are counted in both modes.
"""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data_root", "model_out", "logits_out", "metrics_out", "numerics_out", "loss_out")
    from lora_mnist.config import load_params

    params = load_params()  # validated before any heavy import or work
    from lora_mnist.numerics import pin

    pin(params.numerics)  # before numpy or torch loads
    from lora_mnist.base.pretrain import pretrain

    print(pretrain(params.device, params.numerics, params.model, params.pretrain, params.target.select_on,
                   **vars(args)))


if __name__ == "__main__":
    run_stage(main)
