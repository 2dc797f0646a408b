"""The adapter zoo on tiny synthetic data: training sets, records, switching, summing, verify's zoo checks."""

import json

import numpy as np
import pytest
import torch

from lora_mnist.adapter import load_adapter, save_adapter, switch_adapter
from lora_mnist.checkpoint import save_model
from lora_mnist.config import FinetuneParams, LoraParams
from lora_mnist.errors import ArtifactError
from lora_mnist.idx import read_idx
from lora_mnist.integrity import digest
from lora_mnist.lora import apply_lora, lora_layers, merge
from lora_mnist.model import RichBoyNet
from lora_mnist.names import ZOO_RECORD, peft_key
from lora_mnist.proof import Proof, check_zoo
from lora_mnist.summary import zoo_headline
from lora_mnist.zoo import digits_set, make_adapter, train_adapter
from lora_mnist.zoo_eval import others_accuracy, summed

CFG = FinetuneParams(seed=0, steps=4, batch_size=5, lr=0.01, replay=0.5)  # replay is ignored by the zoo
LORA = LoraParams(rank=2, alpha=2.0)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from synthetic import write_mnist

    root = tmp_path_factory.mktemp("data")
    write_mnist(root / "MNIST" / "raw", n_train=120, n_test=60, gz=False)
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "pretrained.safetensors"
    save_model(RichBoyNet(16, 8), path)
    return path


@pytest.fixture(scope="module")
def zoo(data_root, pretrained, tmp_path_factory):
    """Adapters for digits 3 and 5 and one for both, trained and saved as the stages do."""
    out = tmp_path_factory.mktemp("zoo")
    for name, digits in {"3": [3], "5": [5], "pair": [3, 5]}.items():
        make_adapter(data_root, pretrained, digits, "test", CFG, LORA, torch.device("cpu"), out / name)
    return out


def test_a_digit_set_holds_that_digit_only_and_never_the_held_out_images(data_root):
    labels = read_idx(data_root / "MNIST" / "raw" / "train-labels-idx1-ubyte")
    data = digits_set(data_root, [3, 5], "test", 5)
    assert data.n_target == len(data.labels) == int(np.isin(labels, [3, 5]).sum())
    assert set(data.labels.tolist()) == {3, 5} and data.digits == (3, 5)
    held_out = digits_set(data_root, [3], "validation", 5)  # the last sixth chose the target: never trained on
    assert held_out.n_target == int((labels[: 120 - 20] == 3).sum()) < int((labels == 3).sum())
    with pytest.raises(ValueError, match="2 target digits"):
        data.digit  # noqa: B018


def test_too_few_images_for_a_batch_names_the_zoo_param(data_root):
    from lora_mnist.errors import DataError

    with pytest.raises(DataError, match=r"digit 3 has \d+ training samples, fewer than one batch .* zoo.digits"):
        digits_set(data_root, [3], "test", 1000)
    with pytest.raises(DataError, match=r"digit \[3, 5\] has .* choose another zoo.compose"):
        digits_set(data_root, [3, 5], "test", 1000, knob="zoo.compose")


def test_the_record_holds_the_trained_factors_and_the_untouched_base(zoo, pretrained):
    from lora_mnist.integrity import tensor_digests

    record = json.loads((zoo / "3" / ZOO_RECORD).read_text())
    assert record["base_sha256"] == tensor_digests(pretrained)
    assert record["digits"] == [3] and record["loss"]["first"] > 0
    assert record["numerics"]["torch_device"] == "cpu" and "cpu" in record["numerics"]  # how it was computed
    from safetensors.numpy import load_file

    saved = load_file(zoo / "3" / "adapter_model.safetensors")
    assert record["adapter_sha256"] == {k: digest(v) for k, v in saved.items()}
    assert sorted(saved) == sorted(peft_key(n, p) for n in LORA.targets for p in "AB")


def test_switching_equals_loading_on_a_fresh_base_and_never_touches_the_base(zoo, pretrained):
    from lora_mnist.checkpoint import load_model

    images = torch.randn(6, 784, generator=torch.Generator().manual_seed(2))
    live = load_model(pretrained)
    load_adapter(live, zoo / "3")
    base_before = {k: v.clone() for k, v in live.state_dict().items() if "lora_" not in k}
    switch_adapter(live, zoo / "5")
    fresh = load_model(pretrained)
    load_adapter(fresh, zoo / "5")
    assert torch.equal(live(images), fresh(images))
    assert all(torch.equal(live.state_dict()[k], v) for k, v in base_before.items())


def test_switching_to_an_adapter_of_another_layout_is_refused(zoo, pretrained, tmp_path):
    from lora_mnist.checkpoint import load_model

    other = load_model(pretrained)
    apply_lora(other, ["linear1"], 1, 1.0, generator=torch.Generator().manual_seed(0))
    save_adapter(other, tmp_path / "other")
    live = load_model(pretrained)
    load_adapter(live, zoo / "3")
    with pytest.raises(ArtifactError, match="layout .* differs from the model's adapter"):
        switch_adapter(live, tmp_path / "other")


def test_summing_two_adapters_adds_both_updates(zoo, pretrained):
    from lora_mnist.checkpoint import load_model

    both = summed(pretrained, [zoo / "3", zoo / "5"])
    base = load_model(pretrained)
    deltas = []
    for name in ("3", "5"):
        model = load_model(pretrained)
        load_adapter(model, zoo / name)
        deltas.append({k: merge(model).state_dict()[k] - v for k, v in base.state_dict().items()})
    for key, weight in base.state_dict().items():
        torch.testing.assert_close(both.state_dict()[key], weight + deltas[0][key] + deltas[1][key])
    assert not lora_layers(both)


def test_others_accuracy_skips_the_given_digits():
    labels, preds = torch.tensor([3, 3, 5, 1, 1, 2]), torch.tensor([0, 0, 5, 1, 0, 2])
    assert others_accuracy(labels, preds, [3]) == pytest.approx(3 / 4)
    assert others_accuracy(labels, preds, [3, 5]) == pytest.approx(2 / 3)


def _manifest_and_snapshot(pretrained):
    from lora_mnist.integrity import read_safetensors, tensor_digests

    return tensor_digests(pretrained), read_safetensors(pretrained)[0]


def test_verify_passes_an_honest_zoo(zoo, pretrained):
    proof = Proof()
    check_zoo(proof, {zoo / "3": [3], zoo / "5": [5], zoo / "pair": [3, 5]}, *_manifest_and_snapshot(pretrained))
    assert proof.failures == [] and proof.checks == {
        "zoo_base_equals_snapshot": True, "zoo_adapters_equal_trained": True,
        "zoo_adapters_readable_and_consistent": True}
    assert proof.tensors_checked == 3 * (6 + 6)  # per adapter: 6 base tensors, 6 factors


@pytest.mark.parametrize("tamper,check,needle", [
    ("adapter", "zoo_adapters_equal_trained", "linear2.lora_B.weight differs from the trained factors"),
    ("record", "zoo_base_equals_snapshot", "tensor linear1.weight differs from the snapshot"),
    ("config", "zoo_adapters_readable_and_consistent", "has shape (2, 784), expected (3, 784)"),
    ("digits", "zoo_adapters_readable_and_consistent", "trained on digits [3], expected [5]"),
    ("missing", "zoo_adapters_readable_and_consistent", "adapter_model.safetensors: file not found"),
])
def test_verify_names_what_moved_in_a_zoo_adapter(zoo, pretrained, tmp_path, tamper, check, needle):
    import shutil

    from safetensors.torch import load_file, save_file

    victim = tmp_path / "3"
    shutil.copytree(zoo / "3", victim)
    if tamper == "adapter":
        tensors = load_file(victim / "adapter_model.safetensors")
        tensors[peft_key("linear2", "B")][0, 0] += 1e-3
        save_file(tensors, victim / "adapter_model.safetensors")
    elif tamper == "record":  # training moved a base weight: its digest no longer matches the snapshot
        record = json.loads((victim / ZOO_RECORD).read_text())
        record["base_sha256"]["linear1.weight"] = "0" * 64
        (victim / ZOO_RECORD).write_text(json.dumps(record))
    elif tamper == "config":
        config = json.loads((victim / "adapter_config.json").read_text())
        (victim / "adapter_config.json").write_text(json.dumps({**config, "r": 3}))
    elif tamper == "missing":
        (victim / "adapter_model.safetensors").unlink()
    proof = Proof()  # "digits": digit 3's adapter where digit 5's should be
    check_zoo(proof, {zoo / "5": [5], victim: [5 if tamper == "digits" else 3]}, *_manifest_and_snapshot(pretrained))
    assert proof.checks[check] is False
    assert any(needle in f and str(victim) in f for f in proof.failures), proof.failures


def test_the_headline_counts_adapters_that_cut_their_digits_errors():
    metrics = {"adapters": {"3": {"wrong_base": 9, "wrong_lora": 2}, "5": {"wrong_base": 4, "wrong_lora": 4}}}
    assert zoo_headline(metrics) == {"zoo_adapters": 2, "zoo_improved": 1, "zoo_wrong": 6}


def test_the_zoo_ignores_replay(data_root, pretrained):
    data = digits_set(data_root, [3], "test", CFG.batch_size)
    a = train_adapter(pretrained, data, CFG, LORA, torch.device("cpu"))[1]
    b = train_adapter(pretrained, data, FinetuneParams(**{**CFG.__dict__, "replay": 0.0}), LORA, torch.device("cpu"))[1]
    assert a == b


def test_our_sum_is_what_peft_cat_combination_computes(zoo, pretrained):
    peft = pytest.importorskip("peft")
    from lora_mnist.checkpoint import load_model

    model = peft.PeftModel.from_pretrained(load_model(pretrained), zoo / "3", adapter_name="3")
    model.load_adapter(zoo / "5", adapter_name="5")
    model.add_weighted_adapter(["3", "5"], [1.0, 1.0], "sum", combination_type="cat")
    model.set_adapter("sum")
    images = torch.randn(16, 784, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(images), summed(pretrained, [zoo / "3", zoo / "5"])(images), atol=1e-5, rtol=1e-5)


def test_folders_of_removed_digits_are_reported(tmp_path):
    from lora_mnist.zoo_eval import stale_adapters

    for name in ("2", "3", "8", "pair"):
        (tmp_path / name).mkdir()
    (tmp_path / ".gitignore").write_text("/2\n")
    assert stale_adapters(tmp_path, [2, 3], tmp_path / "pair") == [str(tmp_path / "8")]
