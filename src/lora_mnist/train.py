"""The training loop shared by pretraining and fine-tuning: Adam, cross-entropy, seeded batches."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.adam import adam
from tqdm import tqdm

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
