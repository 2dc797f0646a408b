"""DVC stage `pretrain`: train RichBoyNet from scratch on the MNIST training images, then count its errors.

All 60,000 images with target.select_on = test (the seed); the first 50,000 with `validation`, whose last
10,000 it then scores for select_target. Its test-set errors are counted in both modes.
"""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data", "model_out", "metrics_out", "numerics_out", "loss_out")

    from lora_mnist.config import load_params

    params = load_params()  # validated before any heavy import or work

    import torch

    from lora_mnist.artifacts import write_json
    from lora_mnist.checkpoint import save_model
    from lora_mnist.data import batch_indices, load_split, steps_per_epoch
    from lora_mnist.evaluate import accuracy, predict, wrong_counts
    from lora_mnist.model import RichBoyNet
    from lora_mnist.plots import write_losses
    from lora_mnist.report import per_digit
    from lora_mnist.runtime import configure_torch, numerics, resolve_device
    from lora_mnist.selection import validation_size
    from lora_mnist.train import train

    device = resolve_device(params.device)
    configure_torch(device)
    cfg = params.pretrain
    images, labels = load_split(args.data, "train")
    n_val = validation_size(len(images), params.target.select_on)
    held_out = images[len(images) - n_val :], labels[len(images) - n_val :]  # (n_val, 784), (n_val,)
    images, labels = images[: len(images) - n_val], labels[: len(images) - n_val]
    # As in the seed: manual_seed, build the model (its init draws first), then shuffle from the same
    # generator the way its DataLoader does; so seed 0 replays the seed's init and data order exactly.
    gen = torch.manual_seed(cfg.seed)
    model = RichBoyNet(params.model.hidden_size_1, params.model.hidden_size_2).to(device)
    steps = cfg.epochs * steps_per_epoch(len(images), cfg.batch_size)
    batches = batch_indices(len(images), cfg.batch_size, steps, gen)
    losses = train(model, images.to(device), labels.to(device), batches, steps=steps, lr=cfg.lr, desc="pretrain")
    # The test set, here where the model already is: select_target picks from these counts without torch.
    test_images, test_labels = load_split(args.data, "test")
    preds = predict(model, test_images.to(device))
    wrong, acc = wrong_counts(test_labels, preds), accuracy(test_labels, preds)
    scores = {"test": {"accuracy": acc, "wrong": per_digit(wrong)}}
    if n_val:
        val_preds = predict(model, held_out[0].to(device))
        scores["validation"] = {"accuracy": accuracy(held_out[1], val_preds),
                                "wrong": per_digit(wrong_counts(held_out[1], val_preds))}
    save_model(model, args.model_out)
    write_losses(args.loss_out, losses)
    last = losses[-100:]
    write_json(args.metrics_out, {
        "device": device.type, "steps": steps, "train_size": len(images), "validation_size": n_val,
        "loss": {"first": losses[0], "last": losses[-1], "mean_last_100": sum(last) / len(last)},
        **scores,
    })
    write_json(args.numerics_out, numerics(device))
    print(f"pretrain: {steps} steps on {len(images)} images ({device.type}), mean loss of last 100 steps "
          f"{sum(last) / len(last):.4f}, test accuracy {acc:.4f} -> {args.model_out}")


if __name__ == "__main__":
    run_stage(main)
