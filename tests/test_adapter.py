"""Adapter save/load in PEFT's format: exact round trip, deterministic bytes, tampering, PEFT itself."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_mnist.adapter import load_adapter, save_adapter
from lora_mnist.peft_config import read_adapter_config
from lora_mnist.errors import ArtifactError
from lora_mnist.lora import apply_lora, freeze_non_lora, lora_layers
from lora_mnist.model import LINEAR_NAMES, RichBoyNet

KEY = "base_model.model.{}.lora_{}.weight"


@pytest.fixture
def base():
    torch.manual_seed(0)
    return RichBoyNet(16, 32)


@pytest.fixture
def images():
    return torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def trained(base, images, targets=LINEAR_NAMES, rank=2, alpha=4.0, **kw):
    """A LoRA model whose A and B are both non-trivial (a few Adam steps)."""
    model = copy.deepcopy(base)
    apply_lora(model, targets, rank, alpha, generator=torch.Generator().manual_seed(0), **kw)
    freeze_non_lora(model)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if 'lora_' in n], lr=0.1)
    labels = torch.arange(len(images)) % 10
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        opt.step()
    return model


@pytest.mark.parametrize("kw", [{}, {"init": "kaiming", "scaling": "rslora", "targets": ["linear3", "linear1"]}])
def test_round_trip_is_exact(base, images, tmp_path, kw):
    model = trained(base, images, **kw)
    save_adapter(model, tmp_path / "adapter")
    loaded = copy.deepcopy(base)
    load_adapter(loaded, tmp_path / "adapter")
    ours, theirs = lora_layers(model), lora_layers(loaded)
    assert ours.keys() == theirs.keys()
    for name, lora in ours.items():
        other = theirs[name]
        assert torch.equal(lora.lora_A, other.lora_A) and torch.equal(lora.lora_B, other.lora_B)
        assert (lora.rank, lora.alpha, lora.init, lora.scaling, lora.scale) == (
            other.rank, other.alpha, other.init, other.scaling, other.scale)
    assert torch.equal(model(images), loaded(images))


def test_saved_files_follow_the_peft_layout(base, images, tmp_path):
    save_adapter(trained(base, images, targets=["linear1", "linear3"], rank=3), tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = read_adapter_config(tmp_path / "a")
    assert config["peft_type"] == "LORA" and config["r"] == 3 and config["lora_alpha"] == 4.0
    assert config["target_modules"] == ["linear1", "linear3"]
    assert (config["use_rslora"], config["init_lora_weights"], config["bias"]) == (False, "gaussian", "none")
    tensors = load_file(tmp_path / "a" / "adapter_model.safetensors")
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        KEY.format("linear1", "A"): (3, 784), KEY.format("linear1", "B"): (16, 3),
        KEY.format("linear3", "A"): (3, 32), KEY.format("linear3", "B"): (10, 3)}
    from safetensors import safe_open
    with safe_open(tmp_path / "a" / "adapter_model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt", "init": "gaussian", "scaling": "standard"}


def test_saving_twice_gives_identical_bytes(base, images, tmp_path):
    model = trained(base, images)
    save_adapter(model, tmp_path / "one")
    save_adapter(model, tmp_path / "two")
    save_adapter(model, tmp_path / "two")  # overwriting an existing adapter works
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    reloaded = copy.deepcopy(base)
    load_adapter(reloaded, tmp_path / "one")
    save_adapter(reloaded, tmp_path / "three")
    assert (tmp_path / "three" / "adapter_model.safetensors").read_bytes() == (
        tmp_path / "one" / "adapter_model.safetensors").read_bytes()


def test_a_model_without_lora_cannot_be_saved(base, tmp_path):
    with pytest.raises(ArtifactError, match="no LoRA layers"):
        save_adapter(base, tmp_path / "a")
    assert not (tmp_path / "a").exists()


def _tamper_tensors(adapter, change):
    path = adapter / "adapter_model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


def _tamper_config(adapter, change):
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


TAMPER = [
    (lambda d: _tamper_tensors(d, lambda t: t.update({KEY.format("linear2", "B"): torch.zeros(31, 2)})),
     [KEY.format("linear2", "B"), "(31, 2)", "(32, 2)"]),
    (lambda d: _tamper_tensors(d, lambda t: t.pop(KEY.format("linear1", "A"))),
     ["missing", KEY.format("linear1", "A")]),
    (lambda d: _tamper_tensors(d, lambda t: t.update({KEY.format("linear9", "A"): torch.zeros(2, 3)})),
     ["unexpected", KEY.format("linear9", "A")]),
    (lambda d: _tamper_tensors(d, lambda t: t.update({KEY.format("linear1", "A"): t[KEY.format("linear1", "A")].double()})),
     [KEY.format("linear1", "A"), "torch.float64", "torch.float32"]),
    (lambda d: _tamper_config(d, lambda c: c.update(target_modules=["linear1", "linear9"])),
     ["'linear9'", "adapter_config.json"]),
    (lambda d: _tamper_config(d, lambda c: c.update(r=0)), ["r=0", ">= 1"]),
    (lambda d: _tamper_config(d, lambda c: c.update(lora_alpha=-2)), ["lora_alpha=-2"]),
    (lambda d: _tamper_config(d, lambda c: c.update(peft_type="IA3")), ["peft_type='IA3'"]),
    (lambda d: _tamper_config(d, lambda c: c.update(use_dora=True)), ["use_dora=True"]),
    (lambda d: _tamper_config(d, lambda c: c.update(init_lora_weights="pissa")), ["init_lora_weights='pissa'"]),
    (lambda d: (d / "adapter_model.safetensors").unlink(), ["adapter_model.safetensors", "not found"]),
    (lambda d: (d / "adapter_config.json").unlink(), ["adapter_config.json", "not found"]),
    (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x10\x00garbage"), ["adapter_model.safetensors"]),
]


@pytest.mark.parametrize("tamper,needles", TAMPER)
def test_tampered_adapters_raise_artifact_error(base, images, tmp_path, tamper, needles):
    save_adapter(trained(base, images), tmp_path / "a")
    tamper(tmp_path / "a")
    model = copy.deepcopy(base)
    with pytest.raises(ArtifactError) as info:
        load_adapter(model, tmp_path / "a")
    for needle in needles:
        assert needle in str(info.value)
    assert not lora_layers(model)  # a bad adapter leaves the model untouched


def test_switching_checks_the_new_adapter_as_loading_does(base, images, tmp_path):
    from lora_mnist.adapter import switch_adapter

    save_adapter(trained(base, images), tmp_path / "a")
    save_adapter(trained(base, images), tmp_path / "b")
    model = copy.deepcopy(base)
    load_adapter(model, tmp_path / "a")
    _tamper_tensors(tmp_path / "b", lambda t: t.update({KEY.format("linear2", "B"): t[KEY.format("linear2", "B")].double()}))
    with pytest.raises(ArtifactError, match="float64"):
        switch_adapter(model, tmp_path / "b")
    save_adapter(trained(base, images, alpha=2.0), tmp_path / "c")
    with pytest.raises(ArtifactError, match="layout"):  # alpha 2 vs the live adapter's 4: another scale
        switch_adapter(model, tmp_path / "c")


def test_loading_onto_a_different_model_names_the_tensor(base, images, tmp_path):
    save_adapter(trained(base, images, targets=["linear1"], rank=12), tmp_path / "a")
    with pytest.raises(ArtifactError, match=r"'base_model.model.linear1.lora_B.weight' has shape \(16, 12\)"):
        load_adapter(RichBoyNet(8, 32), tmp_path / "a")  # linear1 is 784 -> 8 there


def test_a_rank_too_large_for_the_layer_is_refused(base, images, tmp_path):
    save_adapter(trained(base, images, targets=["linear3"], rank=2), tmp_path / "a")
    _tamper_config(tmp_path / "a", lambda c: c.update(r=11))  # linear3 is 32 -> 10
    _tamper_tensors(tmp_path / "a", lambda t: t.update({KEY.format("linear3", "A"): torch.zeros(11, 32),
                                                        KEY.format("linear3", "B"): torch.zeros(10, 11)}))
    with pytest.raises(ArtifactError, match="rank=11"):
        load_adapter(copy.deepcopy(base), tmp_path / "a")


@pytest.mark.parametrize("kw", [{}, {"init": "kaiming", "scaling": "rslora", "targets": ["linear2", "linear3"]}])
def test_peft_loads_our_adapter_and_agrees(base, images, tmp_path, kw):
    peft = pytest.importorskip("peft")
    model = trained(base, images, **kw)
    save_adapter(model, tmp_path / "a")
    peft_model = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "a")
    peft_model.eval()
    with torch.no_grad():
        ours, theirs = model(images), peft_model(images)
    assert not torch.equal(ours, base(images))  # the adapter does something
    assert torch.equal(ours.argmax(1), theirs.argmax(1))
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
