"""DVC stage `pretrain`: train RichBoyNet from scratch on the MNIST training images, then count its errors.

All 60,000 images with target.select_on = test (the seed); the first 50,000 with `validation`, whose last
10,000 it then scores for select_target. Its test-set errors are counted in both modes.
"""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "model_out", "metrics_out", "numerics_out", "loss_out")
    from lora_mnist.config import load_params

    params = load_params()  # validated before any heavy import or work

    from lora_mnist.artifacts import write_json
    from lora_mnist.checkpoint import save_model
    from lora_mnist.plots import write_losses
    from lora_mnist.pretraining import pretrain
    from lora_mnist.runtime import configure_torch, numerics, resolve_device

    device = resolve_device(params.device)
    configure_torch(device)
    result = pretrain(args.data, params.model, params.pretrain, params.target.select_on, device)
    save_model(result.model, args.model_out)
    write_losses(args.loss_out, result.losses)
    write_json(args.metrics_out, result.metrics)
    write_json(args.numerics_out, numerics(device))
    m = result.metrics
    print(f"pretrain: {m['steps']} steps on {m['train_size']} images ({device.type}), mean loss of last 100 steps "
          f"{m['loss']['mean_last_100']:.4f}, test accuracy {m['test']['accuracy']:.4f} -> {args.model_out}")


if __name__ == "__main__":
    run_stage(main)
