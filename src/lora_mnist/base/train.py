"""Training and testing, as the seed does them: Adam and cross-entropy over seeded batches, the per-step loss log,
then predictions, accuracy and per-digit error counts on a labelled set."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.optim.adam import adam
from tqdm import tqdm

from lora_mnist.artifacts import read_safetensors, safetensors_bytes, write_bytes
from lora_mnist.cli import ArtifactError
from lora_mnist.config import N_CLASSES

BATCH = 1000  # images per forward pass when scoring; finetune checks LoRA-off against the first batch (score_lora)


class Adam:
    """`torch.optim.Adam` (defaults, lr as given), its exact update through `torch.optim.adam.adam`.

    Why not the class: `torch.optim.Optimizer` imports torch._dynamo on its first call (about 2 s per process,
    in each of the three training stages). The functional form runs the same kernels on the same state.
    """

    def __init__(self, params: list[nn.Parameter], lr: float, device: torch.device) -> None:
        self.params, self.lr = params, lr
        # The fused kernel where the device has one (same maths, ~3x faster at batch 10); step counters
        # live where torch.optim.Adam puts them: on the device (float32) when fused, else on the CPU.
        self.fused = device.type in ("cpu", "cuda")
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) if self.fused
                      else torch.tensor(0.0, dtype=torch.get_default_dtype()) for p in params]

    def zero_grad(self) -> None:
        """Drop the gradients (set_to_none, as torch.optim's default)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every param that has a gradient (torch.optim.Adam skips the others too)."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        adam(
            [self.params[i] for i in live], [self.params[i].grad for i in live],
            [self.exp_avgs[i] for i in live], [self.exp_avg_sqs[i] for i in live], [], [self.steps[i] for i in live],
            fused=self.fused, amsgrad=False, beta1=0.9, beta2=0.999, lr=self.lr,
            weight_decay=0.0, eps=1e-8, maximize=False,
        )


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batches: Iterable[torch.Tensor],
    *,
    steps: int,
    lr: float,
    desc: str,
) -> list[float]:
    """Train the model's trainable params on `steps` batches of indices; return the loss of every step."""
    device = images.device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = Adam(params, lr, device)  # fresh per call, as in the seed
    loss_fn = nn.CrossEntropyLoss()
    losses = torch.full((steps,), float("nan"), device=device)  # stays on device: no host sync per step
    model.train()
    bar = tqdm(batches, total=steps, desc=desc, mininterval=1.0)
    step = -1
    for step, idx in enumerate(bar):
        idx = idx.to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(images[idx]), labels[idx])  # images: (b, 784) -> logits (b, 10)
        loss.backward()
        optimizer.step()
        losses[step] = loss.detach()
        if step % 200 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    if step + 1 != steps:
        raise ValueError(f"train: got {step + 1} batches, expected {steps}")
    return losses.cpu().tolist()


def write_losses(path: str | Path, losses: Sequence[float]) -> None:
    """Per-step training loss as TSV (`step`, `loss`), the file DVC plots; repr() keeps every float32 bit."""
    lines = ["step\tloss", *(f"{step}\t{loss!r}" for step, loss in enumerate(losses))]
    write_bytes(path, ("\n".join(lines) + "\n").encode())


@torch.inference_mode()
def logits(model: nn.Module, images: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """Logits (n, 10) on CPU, batched (the seed evaluates one image at a time)."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]).cpu()


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """Argmax predictions (n,) int64 on CPU."""
    return logits(model, images, batch_size).argmax(dim=1)


def write_logits(path: str | Path, values: torch.Tensor) -> None:
    """A model's test-set logits (n, 10) float32 as safetensors: what later stages compare with, never recompute."""
    write_bytes(path, safetensors_bytes({"logits": values}, {"split": "test", "batch": str(BATCH)}))


def read_logits(path: str | Path, n: int) -> torch.Tensor:
    """The logits write_logits saved, checked to be (n, 10) float32; else an ArtifactError naming the file."""
    tensors, _ = read_safetensors(path, framework="pt")
    found = tensors.get("logits")
    if set(tensors) != {"logits"} or found.dtype != torch.float32 or tuple(found.shape) != (n, N_CLASSES):
        shapes = {k: (tuple(v.shape), str(v.dtype)) for k, v in tensors.items()}
        raise ArtifactError(f"{path}: expected one tensor logits ({n}, {N_CLASSES}) float32, found {shapes}")
    return found


def wrong_counts(labels: torch.Tensor, preds: torch.Tensor) -> list[int]:
    """Wrong predictions per digit, indexed by the TRUE label (as the seed counts them)."""
    wrong = labels[preds != labels]
    return torch.bincount(wrong, minlength=N_CLASSES).tolist()


def digit_totals(labels: torch.Tensor) -> list[int]:
    """How many samples of each digit there are."""
    return torch.bincount(labels, minlength=N_CLASSES).tolist()


def accuracy(labels: torch.Tensor, preds: torch.Tensor) -> float:
    """Fraction of correct predictions (full precision)."""
    return (preds == labels).sum().item() / len(labels)
