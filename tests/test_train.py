"""base/train.py: the training loop (its Adam is torch.optim.Adam bit for bit, without torch._dynamo's import cost)
and the scoring of a model on a labelled set."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from lora_mnist.artifacts import per_digit
from lora_mnist.base.model import RichBoyNet
from lora_mnist.base.train import Adam, accuracy, digit_totals, logits, predict, train, wrong_counts


def _step(model: nn.Module, opt, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize("fused", [True, False])
def test_adam_equals_torch_optim_adam_bit_for_bit(fused):
    torch.manual_seed(0)
    ours, ref = RichBoyNet(16, 32), RichBoyNet(16, 32)
    ref.load_state_dict(ours.state_dict())
    ref.linear3.weight.requires_grad_(False)  # a frozen param: both must skip it
    ours.linear3.weight.requires_grad_(False)
    device = torch.device("cpu" if fused else "meta")  # meta: any device without a fused kernel
    opt = Adam([p for p in ours.parameters() if p.requires_grad], lr=1e-3, device=device)
    assert opt.fused is fused
    ref_opt = torch.optim.Adam([p for p in ref.parameters() if p.requires_grad], lr=1e-3, fused=fused)
    for step in range(5):
        x, y = torch.randn(10, 784), torch.randint(0, 10, (10,))
        _step(ours, opt, x, y)
        _step(ref, ref_opt, x, y)
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name
    assert all(p.grad is not None for p in ours.parameters() if p.requires_grad)
    opt.zero_grad()
    assert all(p.grad is None for p in ours.parameters())


def test_train_returns_every_step_loss_and_checks_the_batch_count():
    torch.manual_seed(0)
    model = RichBoyNet(8, 8)
    images, labels = torch.randn(40, 784), torch.randint(0, 10, (40,))
    batches = [torch.arange(i, i + 10) for i in range(0, 40, 10)]
    losses = train(model, images, labels, batches, steps=4, lr=1e-2, desc="t")
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    with pytest.raises(ValueError, match="got 4 batches, expected 5"):
        train(model, images, labels, batches, steps=5, lr=1e-2, desc="t")


def test_training_does_not_import_torch_dynamo():
    code = (
        "import sys, torch\n"
        "from lora_mnist.base.model import RichBoyNet\n"
        "from lora_mnist.base.train import train\n"
        "train(RichBoyNet(8, 8), torch.randn(20, 784), torch.randint(0, 10, (20,)),"
        " [torch.arange(10), torch.arange(10, 20)], steps=2, lr=1e-3, desc='t')\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_wrong_counts_are_indexed_by_true_label():
    labels = torch.tensor([7, 7, 7, 1, 9, 0])
    preds = torch.tensor([9, 9, 7, 1, 4, 0])
    assert wrong_counts(labels, preds) == [0, 0, 0, 0, 0, 0, 0, 2, 0, 1]
    assert accuracy(labels, preds) == 3 / 6
    assert per_digit(wrong_counts(labels, preds))["7"] == 2
    assert digit_totals(labels) == [1, 1, 0, 0, 0, 0, 0, 3, 0, 1]


def test_predict_is_batched_argmax():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 10)
    x = torch.randn(25, 4)
    assert torch.equal(predict(model, x, batch_size=7), model(x).argmax(1))
    assert logits(model, x, batch_size=7).shape == (25, 10)
