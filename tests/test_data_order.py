"""Our batches replay torch's DataLoader(shuffle=True) order exactly, so seed 0 matches the seed's run."""

import torch
from torch.utils.data import DataLoader, TensorDataset

from lora_mnist.data import batch_indices


def test_batches_equal_dataloader_order_after_model_init():
    torch.manual_seed(0)
    torch.nn.Linear(5, 3)  # a model init draws from the global generator first, as in the seed
    loader = DataLoader(TensorDataset(torch.arange(23)), batch_size=5, shuffle=True)
    expected = [batch[0] for _ in range(3) for batch in loader]
    after_loader = torch.rand(2)

    gen = torch.manual_seed(0)
    torch.nn.Linear(5, 3)
    ours = list(batch_indices(23, 5, steps=len(expected), generator=gen))
    assert len(ours) == 15 and all(torch.equal(a, b) for a, b in zip(ours, expected))
    assert torch.equal(torch.rand(2), after_loader)  # the same number of draws, too
