"""The adapter zoo on tiny synthetic data: training sets, records, switching, summing, scoring, the zoo's own knobs."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from synthetic import write_pretrained

from lora_mnist.artifacts import digest, read_json, tensor_digests
from lora_mnist.base.data import read_idx
from lora_mnist.base.model import load_model
from lora_mnist.base.train import logits, predict, write_logits, wrong_counts
from lora_mnist.cli import ArtifactError, DataError
from lora_mnist.config import LINEAR_NAMES, ZooParams
from lora_mnist.lora.adapter import load_adapter, save_adapter, switch_adapter, training_record
from lora_mnist.lora.layer import apply_lora, lora_layers, merge
from lora_mnist.lora.peft_format import RECORD, adapter_bytes, load_settings, peft_key
from lora_mnist.lora.zoo import PAIR, digits_set, evaluate_zoo, others_accuracy, summed, train_zoo
from lora_mnist.report.metrics import zoo_headline

ZOO = ZooParams(digits=(3, 5), compose=(3, 5), rank=2, alpha=2.0, seed=0, steps=4, batch_size=5, lr=0.01)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from synthetic import write_mnist

    root = tmp_path_factory.mktemp("data")
    write_mnist(root / "MNIST" / "raw", n_train=120, n_test=60, gz=False)
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return write_pretrained(tmp_path_factory.mktemp("model") / "pretrained.safetensors", 16, 8)


@pytest.fixture(scope="module")
def trained_zoo(data_root, pretrained, tmp_path_factory):
    """Adapters for digits 3 and 5 and one for both, trained and saved as the stage does; and the records returned."""
    out = tmp_path_factory.mktemp("zoo") / "zoo"
    return out, train_zoo(ZOO, "test", data_root, pretrained, out, CPU)


@pytest.fixture(scope="module")
def zoo(trained_zoo):
    return trained_zoo[0]


def test_a_digit_set_holds_those_digits_only_and_never_the_held_out_images(data_root):
    labels = read_idx(data_root / "MNIST" / "raw" / "train-labels-idx1-ubyte")
    data = digits_set(data_root, [3, 5], "test", 5)
    assert data.n_target == len(data.labels) == int(np.isin(labels, [3, 5]).sum())
    assert set(data.labels.tolist()) == {3, 5} and data.digits == [3, 5]
    held_out = digits_set(data_root, [3], "validation", 5)  # the last sixth chose the target: never trained on
    assert held_out.n_target == int((labels[: 120 - 20] == 3).sum()) < int((labels == 3).sum())


def test_too_few_images_for_a_batch_names_the_zoo_param(data_root):
    with pytest.raises(DataError, match=r"digit 3 has \d+ training samples, fewer than one batch .* zoo.digits"):
        digits_set(data_root, [3], "test", 1000)
    with pytest.raises(DataError, match=r"digit \[3, 5\] has \d+ .* choose another zoo.digits"):
        digits_set(data_root, [3, 5], "test", 1000)


def test_the_zoo_holds_one_adapter_per_digit_and_the_pair_each_with_its_record(trained_zoo, pretrained):
    zoo, records = trained_zoo
    assert sorted(p.name for p in zoo.iterdir()) == sorted(["3", "5", PAIR])
    assert records.keys() == {"3", "5", PAIR}
    for name, digits in {"3": [3], "5": [5], PAIR: [3, 5]}.items():
        record = read_json(zoo / name / RECORD)
        assert record == records[name] and record["digits"] == digits
        assert record["base_sha256"] == tensor_digests(pretrained)  # training never moved a base tensor
        assert record["loss"]["first"] > 0
        from safetensors.numpy import load_file

        saved = load_file(zoo / name / "adapter_model.safetensors")
        assert record["adapter_sha256"] == {k: digest(v) for k, v in saved.items()}
        assert sorted(saved) == sorted(peft_key(n, p) for n in LINEAR_NAMES for p in "AB")
        assert {v.shape[0] for k, v in saved.items() if k.endswith("lora_A.weight")} == {ZOO.rank}
    assert records["3"]["adapter_sha256"] != records["5"]["adapter_sha256"]


def test_the_zoo_is_written_whole_so_no_stale_adapter_remains(data_root, pretrained, tmp_path):
    out = tmp_path / "zoo"
    for name in ("2", "3", "8"):  # a previous zoo with other digits
        (out / name).mkdir(parents=True)
    (out / "8" / RECORD).write_text("{}")
    train_zoo(replace(ZOO, steps=1), "test", data_root, pretrained, out, CPU)
    assert sorted(p.name for p in out.iterdir()) == sorted(["3", "5", PAIR])
    assert not list(tmp_path.glob(".tmp-*"))


def test_the_zoo_is_trained_with_its_own_knobs_and_nothing_else(trained_zoo, data_root, pretrained, tmp_path):
    """zoo.* alone decide the adapters (lora.* and finetune.* are the main adapter's; train_zoo never sees them):
    the same knobs give the same bytes whatever the global RNG holds, and the zoo's seed is read."""
    zoo, _ = trained_zoo
    assert load_settings(zoo / "3") == {"targets": list(LINEAR_NAMES), "rank": ZOO.rank, "alpha": ZOO.alpha,
                                        "init": "gaussian", "scaling": "standard"}
    torch.manual_seed(1234)  # the global generator: the zoo draws nothing from it
    torch.rand(7)
    train_zoo(ZOO, "test", data_root, pretrained, tmp_path / "again", CPU)
    for name in ("3", "5", PAIR):
        for path in sorted((zoo / name).iterdir()):
            assert (tmp_path / "again" / name / path.name).read_bytes() == path.read_bytes(), path
    reseeded = train_zoo(replace(ZOO, seed=1), "test", data_root, pretrained, tmp_path / "seeded", CPU)
    assert reseeded["3"]["adapter_sha256"] != read_json(zoo / "3" / RECORD)["adapter_sha256"]
    assert ZOO.finetune().replay == 0.0  # each adapter sees its own digits only


def test_switching_equals_loading_on_a_fresh_base_and_never_touches_the_base(zoo, pretrained):
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
    other = load_model(pretrained)
    apply_lora(other, ["linear1"], 1, 1.0, generator=torch.Generator().manual_seed(0))
    save_adapter(other, tmp_path / "other", training_record(other, [3], 1, [1.0]))
    live = load_model(pretrained)
    load_adapter(live, zoo / "3")
    with pytest.raises(ArtifactError, match="layout .* differs from the model's adapter"):
        switch_adapter(live, tmp_path / "other")


def test_summing_two_adapters_adds_both_updates(zoo, pretrained):
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


def test_scoring_the_zoo_scores_each_adapter_as_if_loaded_alone(zoo, data_root, pretrained, tmp_path):
    from lora_mnist.base.data import load_split

    images, labels = load_split(data_root, "test")
    write_logits(base_logits := tmp_path / "logits.safetensors", logits(load_model(pretrained), images))
    result = evaluate_zoo(data_root, pretrained, base_logits, zoo, [3, 5], [3, 5], CPU)

    def wrong(model):
        return wrong_counts(labels, predict(model, images))

    assert result.wrong["base"] == wrong(load_model(pretrained))
    for digit in (3, 5):
        fresh = load_model(pretrained)
        load_adapter(fresh, zoo / str(digit))
        assert result.wrong[f"adapter {digit}"] == wrong(fresh)  # the stage switched; a fresh load agrees
        entry = result.metrics["adapters"][str(digit)]
        assert entry["wrong_lora"] == result.wrong[f"adapter {digit}"][digit]
        assert entry["bytes"] == adapter_bytes(zoo / str(digit))
    assert result.wrong["sum 3+5"] == wrong(summed(pretrained, [zoo / "3", zoo / "5"]))
    assert result.wrong["pair 3+5"] == wrong(summed(pretrained, [zoo / PAIR]))
    assert result.own == {"adapter 3": [3], "adapter 5": [5], "sum 3+5": [3, 5], "pair 3+5": [3, 5], "base": []}
    assert result.metrics["composition"]["models"]["pair"]["wrong"] == {
        "3": result.wrong["pair 3+5"][3], "5": result.wrong["pair 3+5"][5]}
    json.dumps(result.metrics)  # the metrics file is plain JSON


def test_the_headline_counts_adapters_that_cut_their_digits_errors():
    metrics = {"adapters": {"3": {"wrong_base": 9, "wrong_lora": 2}, "5": {"wrong_base": 4, "wrong_lora": 4}}}
    assert zoo_headline(metrics) == {"zoo_adapters": 2, "zoo_improved": 1, "zoo_wrong": 6}


def test_an_honest_zoo_passes_verify(zoo, pretrained, tmp_path):
    from lora_mnist.verify import prove, take_snapshot

    take_snapshot(pretrained, tmp_path / "snapshot.safetensors", tmp_path / "manifest.json")
    proof = prove(tmp_path / "snapshot.safetensors", tmp_path / "manifest.json", pretrained,
                  {zoo / "3": [3], zoo / "5": [5], zoo / PAIR: [3, 5]})
    assert proof.failures == [] and proof.checks and all(proof.checks.values())


def test_our_sum_is_what_peft_cat_combination_computes(zoo, pretrained):
    peft = pytest.importorskip("peft")

    model = peft.PeftModel.from_pretrained(load_model(pretrained), zoo / "3", adapter_name="3")
    model.load_adapter(zoo / "5", adapter_name="5")
    model.add_weighted_adapter(["3", "5"], [1.0, 1.0], "sum", combination_type="cat")
    model.set_adapter("sum")
    images = torch.randn(16, 784, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(images), summed(pretrained, [zoo / "3", zoo / "5"])(images), atol=1e-5, rtol=1e-5)
