"""Adapter save/load in PEFT's format: exact round trip, deterministic bytes, the training record, tampering (where a
bad r, alpha or target list is refused now that the library trusts its typed inputs), PEFT itself."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_mnist.artifacts import digest, read_json
from lora_mnist.base.model import RichBoyNet
from lora_mnist.cli import ArtifactError
from lora_mnist.config import LINEAR_NAMES
from lora_mnist.lora.adapter import load_adapter, save_adapter, switch_adapter, training_record
from lora_mnist.lora.layer import apply_lora, base_state_dict, freeze_non_lora, lora_layers
from lora_mnist.lora.peft_format import ADAPTER_CONFIG, ADAPTER_WEIGHTS, RECORD, adapter_settings

KEY = "base_model.model.{}.lora_{}.weight"  # PEFT's key of a LoRA factor


@pytest.fixture
def base():
    torch.manual_seed(0)
    return RichBoyNet(16, 32)


@pytest.fixture
def images():
    return torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def trained(base, images, targets=LINEAR_NAMES, rank=2, alpha=4.0, **kw):
    """A LoRA model whose A and B are both non-trivial (a few Adam steps); its losses in `model.losses`."""
    model = copy.deepcopy(base)
    apply_lora(model, targets, rank, alpha, generator=torch.Generator().manual_seed(0), **kw)
    freeze_non_lora(model)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if 'lora_' in n], lr=0.1)
    labels = torch.arange(len(images)) % 10
    model.losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        model.losses.append(loss.item())
    return model


def save(model, out_dir, digits=(7,)):
    """Save as the stages do: the adapter with the record of the training that made it."""
    record = training_record(model, list(digits), 8, getattr(model, "losses", [1.0]))
    save_adapter(model, out_dir, record)
    return record


@pytest.mark.parametrize("kw", [{}, {"init": "kaiming", "scaling": "rslora", "targets": ["linear3", "linear1"]}])
def test_round_trip_is_exact(base, images, tmp_path, kw):
    model = trained(base, images, **kw)
    save(model, tmp_path / "adapter")
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


def test_saved_files_follow_the_peft_layout_and_read_back_as_the_model_s_settings(base, images, tmp_path):
    model = trained(base, images, targets=["linear3", "linear1"], rank=3)
    record = save(model, tmp_path / "a")
    assert {p.name for p in (tmp_path / "a").iterdir()} == {ADAPTER_CONFIG, ADAPTER_WEIGHTS, RECORD}
    settings = adapter_settings(read_json(tmp_path / "a" / ADAPTER_CONFIG), ADAPTER_CONFIG)
    # apply_lora's arguments back, targets in module order whatever order LoRA was applied in
    assert settings == {"targets": ["linear1", "linear3"], "rank": 3, "alpha": 4.0, "init": "gaussian",
                        "scaling": "standard"}
    tensors = load_file(tmp_path / "a" / ADAPTER_WEIGHTS)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        KEY.format("linear1", "A"): (3, 784), KEY.format("linear1", "B"): (16, 3),
        KEY.format("linear3", "A"): (3, 32), KEY.format("linear3", "B"): (10, 3)}
    assert read_json(tmp_path / "a" / RECORD) == record  # the record travels with the adapter


def test_peft_reads_our_config_as_we_mean_it(base, images, tmp_path):
    peft = pytest.importorskip("peft")
    save(trained(base, images, targets=["linear1", "linear3"], rank=3, scaling="rslora"), tmp_path / "a")
    config = peft.LoraConfig.from_pretrained(tmp_path / "a")
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (3, 4.0, {"linear1", "linear3"})
    assert config.use_rslora is True and config.init_lora_weights == "gaussian" and config.bias == "none"


def test_the_record_holds_the_untouched_base_the_saved_factors_and_the_trainable_names(base, images, tmp_path):
    model = trained(base, images)
    record = save(model, tmp_path / "a", digits=(3, 5))
    assert record["digits"] == [3, 5] and record["train_size"] == 8
    assert record["loss"] == {"first": model.losses[0], "last": model.losses[-1]}
    assert record["base_sha256"] == {k: digest(v.numpy()) for k, v in base.state_dict().items()}
    saved = load_file(tmp_path / "a" / ADAPTER_WEIGHTS)
    assert record["adapter_sha256"] == {k: digest(v.numpy()) for k, v in saved.items()}
    assert record["trainable"] == [n for n, p in model.named_parameters() if p.requires_grad]
    assert record["trainable"] and all("lora_" in n for n in record["trainable"])
    assert base_state_dict(model).keys() == record["base_sha256"].keys()


def test_saving_twice_gives_identical_bytes(base, images, tmp_path):
    model = trained(base, images)
    save(model, tmp_path / "one")
    save(model, tmp_path / "two")
    save(model, tmp_path / "two")  # overwriting an existing adapter works
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, RECORD):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    reloaded = copy.deepcopy(base)
    load_adapter(reloaded, tmp_path / "one")
    save(reloaded, tmp_path / "three")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        assert (tmp_path / "three" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def _tamper_tensors(adapter, change):
    path = adapter / ADAPTER_WEIGHTS
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


def _tamper_config(adapter, change):
    path = adapter / ADAPTER_CONFIG
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def _config(**changes):
    return lambda d: _tamper_config(d, lambda c: c.update(changes))


TAMPER = [
    (lambda d: _tamper_tensors(d, lambda t: t.update({KEY.format("linear2", "B"): torch.zeros(31, 2)})),
     [KEY.format("linear2", "B"), "(31, 2)", "(32, 2)"]),
    (lambda d: _tamper_tensors(d, lambda t: t.pop(KEY.format("linear1", "A"))),
     ["missing", KEY.format("linear1", "A")]),
    (lambda d: _tamper_tensors(d, lambda t: t.update({KEY.format("linear9", "A"): torch.zeros(2, 3)})),
     ["unexpected", KEY.format("linear9", "A")]),
    (lambda d: _tamper_tensors(d, lambda t: t.update({KEY.format("linear1", "A"): t[KEY.format("linear1", "A")].double()})),
     [KEY.format("linear1", "A"), "torch.float64", "torch.float32"]),
    # The config: what params.yaml validation used to guard apply_lora against now arrives only through this file.
    (_config(target_modules=["linear1", "linear9"]), ["'linear9'", ADAPTER_CONFIG]),
    (_config(target_modules=["linear1", "relu"]), ["'relu'", "not Linear layers"]),
    (_config(target_modules=[]), ["target_modules=[]", "non-empty"]),
    (_config(target_modules="linear1"), ["target_modules='linear1'", "list"]),
    (_config(target_modules=["linear1", "linear1"]), ["target_modules=", "distinct"]),
    (_config(r=0), ["r=0", ">= 1"]),
    (_config(r=1.5), ["r=1.5", "int"]),
    (_config(r=True), ["r=True", "int"]),
    (_config(lora_alpha=-2), ["lora_alpha=-2", "> 0"]),
    (_config(lora_alpha=0), ["lora_alpha=0", "> 0"]),
    (_config(lora_alpha="1"), ["lora_alpha='1'", "number"]),
    (_config(lora_alpha=float("nan")), ["lora_alpha=nan", "finite"]),
    (_config(peft_type="IA3"), ["peft_type='IA3'"]),
    (_config(use_dora=True), ["use_dora=True"]),
    (_config(use_rslora="yes"), ["use_rslora='yes'"]),
    (_config(fan_in_fan_out=True), ["fan_in_fan_out=True"]),
    (_config(bias="all"), ["bias='all'"]),
    (_config(init_lora_weights="pissa"), ["init_lora_weights='pissa'"]),
    (lambda d: (d / ADAPTER_WEIGHTS).unlink(), [ADAPTER_WEIGHTS, "not found"]),
    (lambda d: (d / ADAPTER_CONFIG).unlink(), [ADAPTER_CONFIG, "not found"]),
    (lambda d: (d / ADAPTER_CONFIG).write_text("[1, 2]"), [ADAPTER_CONFIG, "JSON object"]),
    (lambda d: (d / ADAPTER_WEIGHTS).write_bytes(b"\x10\x00garbage"), [ADAPTER_WEIGHTS]),
]


@pytest.mark.parametrize("tamper,needles", TAMPER)
def test_tampered_adapters_raise_artifact_error(base, images, tmp_path, tamper, needles):
    save(trained(base, images), tmp_path / "a")
    tamper(tmp_path / "a")
    model = copy.deepcopy(base)
    with pytest.raises(ArtifactError) as info:
        load_adapter(model, tmp_path / "a")
    for needle in needles:
        assert needle in str(info.value)
    assert not lora_layers(model)  # a bad adapter leaves the model untouched
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in model.state_dict().items())


def test_switching_checks_the_new_adapter_as_loading_does(base, images, tmp_path):
    save(trained(base, images), tmp_path / "a")
    save(trained(base, images), tmp_path / "b")
    model = copy.deepcopy(base)
    load_adapter(model, tmp_path / "a")
    with pytest.raises(ArtifactError, match="already carries an adapter"):  # loading twice would stack them
        load_adapter(model, tmp_path / "b")
    _tamper_tensors(tmp_path / "b", lambda t: t.update({KEY.format("linear2", "B"): t[KEY.format("linear2", "B")].double()}))
    with pytest.raises(ArtifactError, match="float64"):
        switch_adapter(model, tmp_path / "b")
    save(trained(base, images, alpha=2.0), tmp_path / "c")
    with pytest.raises(ArtifactError, match="layout"):  # alpha 2 vs the live adapter's 4: another scale
        switch_adapter(model, tmp_path / "c")
    fresh = copy.deepcopy(base)
    load_adapter(fresh, tmp_path / "a")
    assert torch.equal(model(images), fresh(images))  # the refused switches changed nothing


def test_loading_onto_a_different_model_names_the_tensor(base, images, tmp_path):
    save(trained(base, images, targets=["linear1"], rank=3), tmp_path / "a")
    with pytest.raises(ArtifactError, match=r"'base_model.model.linear1.lora_B.weight' has shape \(16, 3\), "
                                            r"expected \(8, 3\)"):
        load_adapter(RichBoyNet(8, 32), tmp_path / "a")  # linear1 is 784 -> 8 there


@pytest.mark.parametrize("target,rank,limit", [("linear3", 11, 10), ("linear1", 17, 16)])  # 32 -> 10, 784 -> 16
def test_a_rank_too_large_for_the_layer_is_refused(base, images, tmp_path, target, rank, limit):
    save(trained(base, images, targets=[target], rank=2), tmp_path / "a")
    n_out, n_in = getattr(base, target).weight.shape
    _tamper_config(tmp_path / "a", lambda c: c.update(r=rank))
    _tamper_tensors(tmp_path / "a", lambda t: t.update({KEY.format(target, "A"): torch.zeros(rank, n_in),
                                                        KEY.format(target, "B"): torch.zeros(n_out, rank)}))
    model = copy.deepcopy(base)
    with pytest.raises(ArtifactError, match=rf"r = {rank} is invalid for '{target}'.*r <= {limit}"):
        load_adapter(model, tmp_path / "a")
    assert not lora_layers(model)


@pytest.mark.parametrize("kw", [{}, {"init": "kaiming", "scaling": "rslora", "targets": ["linear2", "linear3"]}])
def test_peft_loads_our_adapter_and_agrees(base, images, tmp_path, kw):
    peft = pytest.importorskip("peft")
    model = trained(base, images, **kw)
    save(model, tmp_path / "a")
    peft_model = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "a")
    peft_model.eval()
    with torch.no_grad():
        ours, theirs = model(images), peft_model(images)
    assert not torch.equal(ours, base(images))  # the adapter does something
    assert torch.equal(ours.argmax(1), theirs.argmax(1))
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
