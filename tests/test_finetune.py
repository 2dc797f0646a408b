"""Fine-tuning with LoRA on a tiny model: what train_lora leaves (only the factors moved, the seed's forward back in
place), and score_lora against pretrain's logits, with the seed's third test: with LoRA switched off the model must give
exactly those logits."""

from __future__ import annotations

import pytest
import torch

from synthetic import write_pretrained

from lora_mnist.artifacts import tensor_digests
from lora_mnist.base.model import load_model
from lora_mnist.base.train import logits, predict, read_logits, write_logits, wrong_counts
from lora_mnist.cli import ArtifactError
from lora_mnist.config import FinetuneParams, LoraParams
from lora_mnist.lora.adapter import training_record
from lora_mnist.lora.finetune import FinetuneSet, score_lora, train_lora
from lora_mnist.lora.layer import lora_layers

CPU = torch.device("cpu")
CFG = FinetuneParams(seed=0, steps=4, batch_size=5, lr=0.05, replay=0.0)
DIGIT = 3


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return write_pretrained(tmp_path_factory.mktemp("model") / "pretrained.safetensors", 8, 6)


@pytest.fixture(scope="module")
def data() -> FinetuneSet:
    images = torch.randn(20, 784, generator=torch.Generator().manual_seed(1))
    return FinetuneSet(images, torch.full((20,), DIGIT), 20, [DIGIT])


@pytest.fixture(scope="module")
def test_set():
    g = torch.Generator().manual_seed(2)
    return torch.randn(50, 784, generator=g), torch.randint(0, 10, (50,), generator=g)


@pytest.fixture(scope="module")
def base_logits(pretrained, test_set, tmp_path_factory):
    """The pretrained model's test-set logits, as the pretrain stage writes them."""
    path = tmp_path_factory.mktemp("logits") / "test_logits.safetensors"
    write_logits(path, logits(load_model(pretrained), test_set[0]))
    return path


@pytest.mark.parametrize("impl", ["parametrize", "lowrank"])
def test_training_moves_only_the_factors_and_returns_the_seed_s_forward(pretrained, data, impl):
    lora = LoraParams(rank=2, alpha=2.0, targets=("linear1", "linear3"), impl=impl)
    model, losses = train_lora(pretrained, data, CFG, lora, CPU)
    assert len(losses) == CFG.steps and losses[-1] < losses[0]  # it learns "say 3"
    record = training_record(model, data.digits, data.n_target, losses)
    assert record["base_sha256"] == tensor_digests(pretrained)  # every frozen tensor as pretrained, bit for bit
    assert record["trainable"] == [n for n, _ in model.named_parameters() if "lora_" in n]
    layers = lora_layers(model)
    assert set(layers) == {"linear1", "linear3"}
    assert all(lora.impl == "parametrize" and bool(lora.lora_B.abs().sum() > 0) for lora in layers.values())


def test_an_honest_model_passes_and_is_scored_against_the_base(pretrained, base_logits, data, test_set):
    model, _ = train_lora(pretrained, data, CFG, LoraParams(rank=2, alpha=2.0), CPU)
    images, labels = test_set
    evaluation, preds, wrong = score_lora(model, base_logits, images, labels, DIGIT, CPU)
    assert torch.equal(preds["base"], predict(load_model(pretrained), images))
    assert torch.equal(preds["lora"], predict(model, images))
    assert wrong == {name: wrong_counts(labels, p) for name, p in preds.items()}
    assert evaluation["target"]["digit"] == DIGIT and evaluation["target"]["wrong_lora"] == wrong["lora"][DIGIT]
    assert evaluation["accuracy"]["lora"] == (preds["lora"] == labels).sum().item() / len(labels)
    assert evaluation["param_count"]["lora"] == 2 * ((784 + 8) + (8 + 6) + (6 + 10))
    assert all(lora.enabled for lora in lora_layers(model).values())  # switched back on afterwards
    assert evaluation["checks"] == {"lora_off_logits_equal_pretrained": True, "lora_off_images_checked": len(labels)}


@pytest.mark.parametrize("tensor", ["linear2.parametrizations.weight.original", "linear1.bias"])
def test_a_model_whose_frozen_tensor_changed_is_refused(pretrained, base_logits, data, test_set, tensor):
    model, _ = train_lora(pretrained, data, CFG, LoraParams(rank=2, alpha=2.0), CPU)
    with torch.no_grad():
        model.get_parameter(tensor).view(-1)[0] += 1e-3
    with pytest.raises(ArtifactError, match=rf"LoRA switched off, the fine-tuned model's logits differ from "
                                            rf".*{base_logits.name} \(max abs diff .* on the first 50 images\)"):
        score_lora(model, base_logits, *test_set, DIGIT, CPU)
    assert all(lora.enabled for lora in lora_layers(model).values())


def test_logits_of_another_size_or_kind_are_refused(tmp_path):
    path = tmp_path / "logits.safetensors"
    write_logits(path, torch.zeros(4, 10))
    assert torch.equal(read_logits(path, 4), torch.zeros(4, 10))
    with pytest.raises(ArtifactError, match=r"expected one tensor logits \(5, 10\) float32, found .*\(4, 10\)"):
        read_logits(path, 5)
    write_logits(path, torch.zeros(4, 10, dtype=torch.float64))
    with pytest.raises(ArtifactError, match="float64"):
        read_logits(path, 4)
