"""RichBoyNet: the seed's deliberately oversized MLP for MNIST (784 -> h1 -> h2 -> 10)."""

from __future__ import annotations

import torch
from torch import nn

from lora_mnist.architecture import LINEAR_NAMES, N_CLASSES, N_PIXELS, layer_shapes

__all__ = ["LINEAR_NAMES", "RichBoyNet", "layer_shapes"]


class RichBoyNet(nn.Module):
    """Three Linear layers with ReLU between them; state_dict keys are `linearN.weight` / `linearN.bias`."""

    def __init__(self, hidden_size_1: int = 1000, hidden_size_2: int = 2000) -> None:
        super().__init__()
        self.linear1 = nn.Linear(N_PIXELS, hidden_size_1)
        self.linear2 = nn.Linear(hidden_size_1, hidden_size_2)
        self.linear3 = nn.Linear(hidden_size_2, N_CLASSES)
        self.relu = nn.ReLU()

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Map images (..., 28, 28) or (N, 784) to logits (N, 10)."""
        x = img.reshape(-1, N_PIXELS)
        x = self.relu(self.linear1(x))
        x = self.relu(self.linear2(x))
        return self.linear3(x)

