"""LoRA invariants: exact equality with the base model, frozen weights, counts, merge, the low-rank forward.

Bad rank/alpha/targets/init/scaling/impl values are refused where they enter: params.yaml (tests/test_config.py) and
adapter files (tests/test_adapter.py); the library trusts its typed arguments."""

import copy
import math

import pytest
import torch
from torch.nn.utils import parametrize

from lora_mnist.base.model import RichBoyNet
from lora_mnist.config import LINEAR_NAMES
from lora_mnist.lora.layer import (
    LoRAParametrization,
    apply_lora,
    base_state_dict,
    count_parameters,
    freeze_non_lora,
    lora_disabled,
    lora_layers,
    merge,
    plain_name,
    set_lora_enabled,
    set_lora_impl,
    trainable_parameter_names,
)

H1, H2 = 16, 32


@pytest.fixture
def base():
    torch.manual_seed(0)
    return RichBoyNet(H1, H2)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)


def lora_model(base, targets=LINEAR_NAMES, rank=2, alpha=4.0, **kw):
    model = copy.deepcopy(base)
    apply_lora(model, targets, rank, alpha, generator=torch.Generator().manual_seed(0), **kw)
    return model


def train_steps(model, batch, steps=5, lr=0.1):
    """A few Adam steps at a high lr on the LoRA parameters only."""
    freeze_non_lora(model)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if 'lora_' in n], lr=lr)
    x, y = batch
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_lora_equals_base_at_init_and_when_disabled(base, batch):
    model = lora_model(base)
    x = batch[0]
    assert torch.equal(model(x), base(x))
    train_steps(model, batch)
    assert not torch.equal(model(x), base(x))
    with lora_disabled(model):
        assert torch.equal(model(x), base(x))
    set_lora_enabled(model, False)
    assert torch.equal(model(x), base(x))


def test_effective_weight_is_original_plus_scaled_update(base, batch):
    model = lora_model(base)
    train_steps(model, batch)
    for name, lora in lora_layers(model).items():
        layer = getattr(model, name)
        original = layer.parametrizations.weight.original
        assert torch.equal(layer.weight, original + lora.lora_B @ lora.lora_A * lora.scale)
        assert torch.equal(original, base.state_dict()[f"{name}.weight"])


def test_training_changes_only_lora_tensors(base, batch):
    model = lora_model(base)
    before = copy.deepcopy(model.state_dict())
    train_steps(model, batch)
    after = model.state_dict()
    lora_keys = {k for k in after if "lora_" in k}
    assert len(lora_keys) == 2 * len(LINEAR_NAMES)
    for key, tensor in after.items():
        if key in lora_keys:
            assert not torch.equal(tensor, before[key]), key
        else:
            assert torch.equal(tensor, before[key]), key
    frozen = base_state_dict(model)
    assert frozen.keys() == base.state_dict().keys()
    assert {plain_name(k) for k in after} - {None} == set(frozen)  # LoRA tensors have no plain name
    assert all(torch.equal(frozen[k], v) for k, v in base.state_dict().items())


def test_trainable_set_is_exactly_lora(base):
    model = lora_model(base, targets=["linear1", "linear3"])
    freeze_non_lora(model)
    assert set(trainable_parameter_names(model)) == {n for n, _ in model.named_parameters() if 'lora_' in n} == {
        f"{name}.parametrizations.weight.0.lora_{ab}" for name in ("linear1", "linear3") for ab in "AB"
    }


def test_seed_counts():
    model = RichBoyNet()
    apply_lora(model, LINEAR_NAMES, rank=1, alpha=1, generator=torch.Generator().manual_seed(0))
    count = count_parameters(model)
    assert (count["original"], count["lora"], round(count["increment_pct"], 3)) == (2_807_010, 6_794, 0.242)


@pytest.mark.parametrize("targets,rank", [(["linear2"], 3), (["linear1", "linear3"], 2), (LINEAR_NAMES, 10)])
def test_counts_are_rank_times_in_plus_out(base, targets, rank):
    model = lora_model(base, targets=targets, rank=rank)
    expected = sum(rank * (getattr(base, n).in_features + getattr(base, n).out_features) for n in targets)
    original = sum(p.numel() for p in base.parameters())
    assert count_parameters(model) == {"original": original, "lora": expected, "increment_pct": 100 * expected / original}


def test_merge_gives_a_plain_model_matching_the_lora_model(base, batch):
    model = lora_model(base)
    train_steps(model, batch)
    before = copy.deepcopy(model.state_dict())
    merged = merge(model)
    assert type(merged) is RichBoyNet
    assert not any(parametrize.is_parametrized(m) for m in merged.modules())
    assert set(merged.state_dict()) == set(base.state_dict())
    x = batch[0]
    torch.testing.assert_close(merged(x), model(x), atol=1e-5, rtol=0)
    for name in LINEAR_NAMES:  # the merged weight is the very tensor the parametrization computes
        assert torch.equal(getattr(merged, name).weight, getattr(model, name).weight)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(parametrize.is_parametrized(getattr(model, n), "weight") for n in LINEAR_NAMES)
    with lora_disabled(model):  # merging keeps the update even while it is switched off
        assert torch.equal(merge(model).linear1.weight, merged.linear1.weight)


def test_merge_does_not_touch_the_global_rng(base):
    model = lora_model(base)
    state = torch.get_rng_state()
    merge(model)
    assert torch.equal(torch.get_rng_state(), state)


def test_train_and_eval_do_not_merge(base, batch):
    model = lora_model(base)
    train_steps(model, batch)
    before = copy.deepcopy(model.state_dict())
    x = batch[0]
    logits = model(x)
    model.eval()
    assert torch.equal(model(x), logits)
    model.train()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(parametrize.is_parametrized(getattr(model, n), "weight") for n in LINEAR_NAMES)


def test_lora_disabled_restores_state_even_on_error(base):
    model = lora_model(base)
    lora_layers(model)["linear2"].enabled = False
    with pytest.raises(RuntimeError):
        with lora_disabled(model):
            assert not any(lora.enabled for lora in lora_layers(model).values())
            raise RuntimeError("boom")
    assert {n: lora.enabled for n, lora in lora_layers(model).items()} == {
        "linear1": True, "linear2": False, "linear3": True}


def test_generator_makes_init_deterministic(base):
    a1 = lora_layers(lora_model(base))["linear2"].lora_A
    a2 = lora_layers(lora_model(base))["linear2"].lora_A
    assert torch.equal(a1, a2)
    other = copy.deepcopy(base)
    apply_lora(other, LINEAR_NAMES, 2, 4.0, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(lora_layers(other)["linear2"].lora_A, a1)


def test_init_and_scaling_variants():
    g = torch.Generator().manual_seed(0)
    gauss = LoRAParametrization(400, 30, rank=4, alpha=8, generator=g)
    assert gauss.lora_A.shape == (4, 400) and gauss.lora_B.shape == (30, 4)
    assert torch.equal(gauss.lora_B, torch.zeros(30, 4))
    assert gauss.scale == 2.0 and abs(gauss.lora_A.std().item() - 1) < 0.1
    kaiming = LoRAParametrization(400, 30, rank=4, alpha=8, init="kaiming", scaling="rslora", generator=g)
    assert kaiming.scale == 8 / math.sqrt(4) == 4.0
    bound = 1 / math.sqrt(400)  # kaiming_uniform with a=sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert kaiming.lora_A.abs().max() <= bound and kaiming.lora_A.abs().max() > 0.9 * bound
    expected = torch.empty(4, 400)
    torch.nn.init.kaiming_uniform_(expected, a=math.sqrt(5), generator=torch.Generator().manual_seed(3))
    again = LoRAParametrization(400, 30, 4, 8, init="kaiming", generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.lora_A, expected)


def test_lowrank_impl_matches_parametrize_and_trains_the_same_parameters(base, batch):
    images, _ = batch
    model = copy.deepcopy(base)
    apply_lora(model, LINEAR_NAMES, rank=2, alpha=4.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for lora in lora_layers(model).values():
            lora.lora_B.normal_(std=0.01, generator=torch.Generator().manual_seed(2))  # a non-zero update
    twin = copy.deepcopy(model)
    set_lora_impl(twin, "lowrank")
    with torch.no_grad():
        assert torch.allclose(twin(images), model(images), rtol=1e-4, atol=1e-5)
        assert torch.equal(twin.linear1.weight, base.linear1.weight)  # lowrank never materialises W + B @ A
        with lora_disabled(twin):
            assert torch.equal(twin(images), base(images))
    for m in (model, twin):
        freeze_non_lora(m)
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
        m(images).square().mean().backward()
        opt.step()
    for (name, a), (_, b) in zip(model.named_parameters(), twin.named_parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name  # same gradients, up to float rounding
    assert trainable_parameter_names(model) == trainable_parameter_names(twin)
