"""Base vs LoRA on the test set, after proving that LoRA switched off gives back the pretrained model exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lora_mnist.adapter import load_adapter
from lora_mnist.checkpoint import load_model, load_state
from lora_mnist.comparison import compare, count_parameters
from lora_mnist.data import load_split
from lora_mnist.errors import ArtifactError
from lora_mnist.integrity import read_safetensors
from lora_mnist.lora import lora_disabled
from lora_mnist.names import FINETUNED
from lora_mnist.scoring import accuracy, digit_totals, logits, predict, wrong_counts


@dataclass(frozen=True)
class Evaluation:
    """The metrics JSON layout, and what the plots need: true labels, and predictions and errors per model."""

    metrics: dict
    labels: list[int]
    predictions: dict[str, list[int]]
    wrong: dict[str, list[int]]


def evaluate_lora(data_root: str | Path, pretrained: str | Path, lora_dir: str | Path, digit: int,
                  device: torch.device) -> Evaluation:
    """Score the pretrained model and the fine-tuned LoRA model (models/lora) on the test set; ArtifactError if
    the fine-tuned model with LoRA off differs from the pretrained model on any test image."""
    images, labels = load_split(data_root, "test")
    base, lora_model = load_model(pretrained), load_model(pretrained)
    load_adapter(lora_model, lora_dir)  # the LoRA layout, as the adapter's config says
    # ...then the fine-tuned model's own tensors, frozen originals included: switching LoRA off must give
    # back exactly the pretrained model (the seed's third test), whatever fine-tuning did.
    finetuned = Path(lora_dir) / FINETUNED
    load_state(lora_model, read_safetensors(finetuned, framework="pt")[0], finetuned)
    images = images.to(device)
    base_logits = logits(base.to(device), images)  # (n, 10)
    with lora_disabled(lora_model):
        off_logits = logits(lora_model.to(device), images)
    if not torch.equal(off_logits, base_logits):  # the adapter must only ever add to the frozen weights
        raise ArtifactError(f"{finetuned}: with LoRA switched off, the logits differ from the pretrained model's "
                            f"(max abs diff {(off_logits - base_logits).abs().max():.6g})")
    preds = {"base": base_logits.argmax(dim=1), "lora": predict(lora_model, images)}
    wrong = {name: wrong_counts(labels, p) for name, p in preds.items()}
    metrics = {
        "device": device.type,
        **compare(digit_totals(labels), {name: accuracy(labels, p) for name, p in preds.items()}, wrong, digit),
        "param_count": asdict(count_parameters(lora_model)),  # original, lora, increment_pct
        "checks": {"lora_off_logits_equal_pretrained": True},  # checked above, on every test image
    }
    return Evaluation(metrics, labels.tolist(), {name: p.tolist() for name, p in preds.items()}, wrong)
