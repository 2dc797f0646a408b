"""Stages `finetune` and `finetune_full`: the pretrained model fine-tuned on the target digit, with LoRA (originals
frozen) and, as the baseline, every weight on the very same batches; each scored on the test set against the base
model and its weight update analysed, in the same process (one `import torch` per experiment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lora_mnist.artifacts import json_field, read_per_digit, read_safetensors, write_json
from lora_mnist.base.data import load_split, replay_batches
from lora_mnist.base.model import RichBoyNet, load_model, model_bytes
from lora_mnist.base.select_target import check_enough
from lora_mnist.base.train import BATCH, accuracy, digit_totals, logits, read_logits, train, write_losses, wrong_counts
from lora_mnist.cli import ArtifactError
from lora_mnist.config import FinetuneParams, LoraParams
from lora_mnist.lora.adapter import save_adapter, training_record
from lora_mnist.lora.layer import apply_lora, count_parameters, freeze_non_lora, lora_disabled, set_lora_impl
from lora_mnist.numerics import configure_torch, generator, record
from lora_mnist.report import analyze, metrics, plots


@dataclass(frozen=True)
class FinetuneSet:
    """Training images of the target digit(s) first (n_target), then, only when replay draws from them, those of
    the other digits (n_other; 0 without replay)."""

    images: torch.Tensor  # (n_target + n_other, 784)
    labels: torch.Tensor  # (n_target + n_other,)
    n_target: int
    digits: list[int]  # the target digits: one, except for the zoo's adapter trained on two


def load_finetune_set(data_root: str | Path, indices_path: str | Path, cfg: FinetuneParams) -> FinetuneSet:
    """Gather the target digit's images chosen by select_target, and the replay pool if cfg.replay uses it. The
    digit is read off the images' labels: select_target.json is the only file that names it."""
    arrays, _ = read_safetensors(indices_path, framework="pt")
    if set(arrays) != {"indices", "others"}:
        raise ArtifactError(f"{indices_path}: expected tensors indices and others (made by select_target)")
    target, others = arrays["indices"], arrays["others"]
    rows = torch.cat([target, others]) if cfg.replay_per_batch else target  # no replay: 1/10 of them to normalise
    images, labels = load_split(data_root, "train", rows=rows)
    digits = labels[: len(target)].unique().tolist()
    if len(digits) != 1:
        raise ArtifactError(f"{indices_path}: the target indices point at images of digits {digits}, not one digit")
    check_enough(len(target), digits[0], cfg.batch_size, "target.digit")
    return FinetuneSet(images, labels, len(target), digits)


def tune(model: nn.Module, data: FinetuneSet, cfg: FinetuneParams, device: torch.device, desc: str) -> list[float]:
    """Train the model's trainable params for cfg.steps batches (replay share from the other digits)."""
    # Its own generator: LoRA and full fine-tuning then see the very same batches.
    batches = replay_batches(data.n_target, len(data.labels) - data.n_target, cfg.batch_size, cfg.replay_per_batch,
                             cfg.steps, generator(cfg.seed))
    return train(model, data.images.to(device), data.labels.to(device), batches, steps=cfg.steps, lr=cfg.lr, desc=desc)


def train_lora(model_path: str | Path, data: FinetuneSet, cfg: FinetuneParams, lora: LoraParams,
               device: torch.device) -> tuple[RichBoyNet, list[float]]:
    """The pretrained model with LoRA on `lora.targets` (A drawn from cfg.seed), originals frozen, trained; returned
    computing the update as the seed does (parametrize), whichever lora.impl trained it."""
    model = load_model(model_path)
    apply_lora(model, lora.targets, lora.rank, lora.alpha, lora.init, lora.scaling, generator=generator(cfg.seed))
    freeze_non_lora(model)
    set_lora_impl(model, lora.impl)  # how training computes the update; the adapter is the same either way
    losses = tune(model.to(device), data, cfg, device, desc="finetune")
    set_lora_impl(model, "parametrize")
    return model, losses


def score_lora(model: nn.Module, base_logits: str | Path, images: torch.Tensor, labels: torch.Tensor, digit: int,
               device: torch.device) -> tuple[dict, dict[str, torch.Tensor], dict[str, list[int]]]:
    """Base vs LoRA on the test set: the comparison, and each model's predictions and errors per digit. The base
    model's logits are pretrain's (`base_logits`): one pass over the test set, the LoRA model's. With LoRA switched
    off, the first batch must give exactly those logits (the seed's third test, on BATCH images: verify proves
    bit for bit that no base tensor moved), else an ArtifactError."""
    images = images.to(device)
    base = read_logits(base_logits, len(labels))  # (n, 10)
    with lora_disabled(model):
        off = logits(model, images[:BATCH])  # the very product pretrain computed for those images
    if not torch.equal(off, base[:BATCH]):
        raise ArtifactError(f"with LoRA switched off, the fine-tuned model's logits differ from {base_logits} "
                            f"(max abs diff {(off - base[:BATCH]).abs().max():.6g} on the first {len(off)} images)")
    preds = {"base": base.argmax(dim=1), "lora": logits(model, images).argmax(dim=1)}
    wrong = {name: wrong_counts(labels, p) for name, p in preds.items()}
    result = metrics.compare(digit_totals(labels), {name: accuracy(labels, p) for name, p in preds.items()}, wrong,
                             digit)
    return {"device": device.type, **result, "param_count": count_parameters(model),
            "checks": {"lora_off_logits_equal_pretrained": True, "lora_off_images_checked": len(off)}}, preds, wrong


def finetune(device_name: str, numerics: str, cfg: FinetuneParams, lora: LoraParams, data_root: str,
             pretrained: str, base_logits: str, indices: str, selection: str, full_analysis: str, lora_out: str,
             metrics_out: str, evaluation_out: str, headline_out: str, analysis_out: str, numerics_out: str,
             loss_out: str, wrong_out: str, confusion_base_out: str, confusion_lora_out: str) -> str:
    """The stage: train the LoRA adapter, save it with its training record, score it against the base model (LoRA
    off must be the base), analyse its update beside full fine-tuning's; returns a summary line."""
    device = configure_torch(device_name, numerics)
    data = load_finetune_set(data_root, indices, cfg)
    digit = data.digits[0]
    model, losses = train_lora(pretrained, data, cfg, lora, device)
    save_adapter(model, lora_out, training_record(model, data.digits, data.n_target, losses))
    write_losses(loss_out, losses)
    counts = count_parameters(model)
    write_json(metrics_out, {
        "device": device.type, "steps": cfg.steps, "train_size": data.n_target, "digit": digit,
        "replay": cfg.replay, "replay_per_batch": cfg.replay_per_batch,
        "loss": {"first": losses[0], "last": losses[-1]}, "param_count": counts,
    })
    images, labels = load_split(data_root, "test")
    evaluation, preds, wrong = score_lora(model, base_logits, images, labels, digit, device)
    evaluation["target"]["chosen_on"] = json_field(selection, "target", "chosen_on")  # every number: test set
    plots.write_confusion(confusion_base_out, labels.tolist(), preds["base"].tolist())
    plots.write_confusion(confusion_lora_out, labels.tolist(), preds["lora"].tolist())
    write_json(wrong_out, plots.wrong_rows(wrong))
    write_json(evaluation_out, evaluation)
    write_json(headline_out, metrics.evaluate_headline(evaluation))
    write_json(analysis_out, analyze.lora_vs_full(pretrained, lora_out, full_analysis))
    write_json(numerics_out, record(device, blas=True))
    acc, target = evaluation["accuracy"], evaluation["target"]
    return (f"finetune: {cfg.steps} steps on {data.n_target} images of digit {digit} ({device.type}), rank "
            f"{lora.rank}, {counts['lora']:,} LoRA params, loss {losses[0]:.4f} -> {losses[-1]:.4f}; test accuracy "
            f"{acc['base']:.4f} -> {acc['lora']:.4f}, digit {digit} wrong {target['wrong_base']} -> "
            f"{target['wrong_lora']}")


def finetune_full(device_name: str, numerics: str, cfg: FinetuneParams, data_root: str, pretrained: str,
                  indices: str, selection: str, metrics_out: str, headline_out: str, analysis_out: str,
                  numerics_out: str, loss_out: str, spectra_png_out: str, spectrum_outs: list[str]) -> str:
    """The stage: every weight trained on the very batches LoRA saw, scored on the test set against the base model's
    results (select_target's file), and the singular values of its update per layer (one spectrum file per layer in
    `spectrum_outs`); returns a summary line."""
    device = configure_torch(device_name, numerics)
    base_wrong = read_per_digit(selection, "wrong")  # read first: a bad file fails before training
    base_accuracy = json_field(selection, "accuracy")
    if isinstance(base_accuracy, bool) or not isinstance(base_accuracy, (int, float)):
        raise ArtifactError(f"{selection}: accuracy = {base_accuracy!r} is not a number")
    data = load_finetune_set(data_root, indices, cfg)
    digit = data.digits[0]
    model = load_model(pretrained)  # every parameter stays trainable
    losses = tune(model.to(device), data, cfg, device, desc="finetune_full")
    images, labels = load_split(data_root, "test")
    preds = logits(model, images.to(device)).argmax(dim=1)
    wrong = {"base": base_wrong, "full": wrong_counts(labels, preds)}
    result = metrics.compare(digit_totals(labels), {"base": base_accuracy, "full": accuracy(labels, preds)}, wrong,
                             digit)
    size = {"trainable_params": sum(p.numel() for p in model.parameters()), "bytes": len(model_bytes(model))}
    out = {"device": device.type, "steps": cfg.steps, "replay": cfg.replay, **result,
           "loss": {"first": losses[0], "last": losses[-1]}, "trainable_params": size["trainable_params"],
           "checkpoint_bytes": size["bytes"]}
    write_losses(loss_out, losses)
    write_json(metrics_out, out)
    write_json(headline_out, metrics.full_headline(out))
    base, _ = read_safetensors(pretrained)
    full = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    report, tops = analyze.full_report(base, full, size, (pretrained, "the fully fine-tuned model"))
    for top, path in zip(tops.values(), spectrum_outs, strict=True):
        write_json(path, plots.spectrum_rows(top))
    plots.write_spectra_png(spectra_png_out, {name: {"full fine-tuning": top} for name, top in tops.items()})
    write_json(analysis_out, report)
    write_json(numerics_out, record(device, blas=True))
    return (f"finetune_full: {cfg.steps} steps, all {size['trainable_params']:,} params; accuracy "
            f"{result['accuracy']['base']:.4f} -> {result['accuracy']['full']:.4f}, digit {digit} wrong "
            f"{result['target']['wrong_base']} -> {result['target']['wrong_full']}; update rank_90 "
            + ", ".join(f"{n} {s['rank_90']}" for n, s in report["layers"].items()))
