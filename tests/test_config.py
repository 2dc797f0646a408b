"""params.yaml validation: every key, every kind of mistake, one clear ConfigError naming the key."""

import copy
from pathlib import Path

import pytest
import yaml

from lora_mnist.cli import ConfigError
from lora_mnist.config import LINEAR_NAMES, FinetuneParams, Params, load_params, parse_params

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"
DEFAULTS = yaml.safe_load(PARAMS_YAML.read_text())


def with_value(dotted: str, value):
    raw = copy.deepcopy(DEFAULTS)
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[leaf] = value
    return raw


def test_params_yaml_is_valid_and_matches_dataclass_defaults():
    assert load_params(PARAMS_YAML) == Params()


# (dotted key, bad value, text the message must contain)
BAD = [
    ("device", "gpu", "cpu, cuda, mps, auto"),
    ("device", 1, "cpu, cuda, mps, auto"),
    ("numerics", "exact", "one of fast, portable"),
    ("numerics", True, "one of fast, portable"),
    ("data.source", "", "directory"),
    ("data.source", 3, "directory"),
    ("model.hidden_size_1", 0, ">= 1"),
    ("model.hidden_size_1", 10.5, "integer"),
    ("model.hidden_size_2", True, "integer"),
    ("model.hidden_size_2", "2000", "integer"),
    ("pretrain.seed", -1, ">= 0"),
    ("pretrain.seed", 0.0, "integer"),
    ("pretrain.epochs", 0, ">= 1"),
    ("pretrain.epochs", 1.0, "integer"),
    ("pretrain.batch_size", 0, ">= 1"),
    ("pretrain.lr", 0, "> 0"),
    ("pretrain.lr", -0.1, "> 0"),
    ("pretrain.lr", True, "> 0"),
    ("pretrain.lr", "fast", "> 0"),
    ("pretrain.lr", float("nan"), "> 0"),
    ("target.digit", 10, "0-9"),
    ("target.digit", -1, "0-9"),
    ("target.digit", "nine", "0-9"),
    ("target.digit", True, "0-9"),
    ("target.digit", 9.0, "0-9"),
    ("target.select_on", "train", "one of test, validation"),
    ("finetune.seed", -5, ">= 0"),
    ("finetune.steps", 0, ">= 1"),
    ("finetune.steps", 1.5, "integer"),
    ("finetune.batch_size", 0, ">= 1"),
    ("finetune.lr", 0.0, "> 0"),
    ("finetune.replay", 1.0, "from 0 up to (not including) 1"),
    ("finetune.replay", -0.1, "from 0 up to (not including) 1"),
    ("lora.rank", 0, ">= 1"),
    ("lora.rank", 1.0, "integer"),
    ("lora.rank", False, "integer"),
    ("lora.rank", 11, "from 1 to 10"),  # linear3 has 10 outputs
    ("lora.alpha", 0, "> 0"),
    ("lora.alpha", -1, "> 0"),
    ("lora.targets", [], "non-empty"),
    ("lora.targets", ["linear4"], "linear1"),
    ("lora.targets", ["linear1", "linear1"], "distinct"),
    ("lora.targets", "linear1", "list"),
    ("lora.init", "xavier", "gaussian, kaiming"),
    ("lora.scaling", "sqrt", "standard, rslora"),
    ("lora.impl", "fast", "parametrize, lowrank"),
    ("zoo.digits", [], "non-empty list of distinct digits"),
    ("zoo.digits", [1, 1], "distinct digits 0-9"),
    ("zoo.digits", [3, 10], "digits 0-9"),
    ("zoo.digits", 3, "list"),
    ("zoo.compose", [3], "two distinct digits"),
    ("zoo.compose", [3, 3], "two distinct digits"),
    ("zoo.compose", [3, "9"], "digits 0-9"),
    ("zoo.compose", 3, "list"),
    ("zoo.rank", 0, ">= 1"),
    ("zoo.rank", 2.0, "integer"),
    ("zoo.rank", 11, "from 1 to 10"),  # every zoo adapter targets linear3 (10 outputs)
    ("zoo.alpha", 0, "> 0"),
    ("zoo.alpha", "big", "> 0"),
    ("zoo.seed", -1, ">= 0"),
    ("zoo.seed", 0.5, "integer"),
    ("zoo.steps", 0, ">= 1"),
    ("zoo.steps", True, "integer"),
    ("zoo.batch_size", 0, ">= 1"),
    ("zoo.batch_size", "10", "integer"),
    ("zoo.lr", 0.0, "> 0"),
    ("zoo.lr", float("inf"), "> 0"),
]


@pytest.mark.parametrize("key,value,allowed", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_value_names_key_value_and_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as exc:
        parse_params(with_value(key, value))
    message = str(exc.value)
    assert key in message and repr(value) in message and allowed in message


def test_every_leaf_key_is_covered_by_the_table():
    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield prefix + key
    assert set(leaves(DEFAULTS)) == {key for key, _, _ in BAD}


def test_composed_digits_must_be_in_the_zoo():
    raw = with_value("zoo.digits", [3, 5])
    with pytest.raises(ConfigError, match=r"zoo.compose = \[3, 9\] is invalid: expected two digits of zoo.digits "
                                          r"\[3, 5\] \(no adapter is trained for \[9\]\)"):
        parse_params(raw)


def test_rank_limit_follows_targets_and_model_size():
    raw = with_value("lora.targets", ["linear1", "linear2"])
    raw["lora"]["rank"] = 64
    assert parse_params(raw).lora.rank == 64
    raw["model"]["hidden_size_1"] = 32
    with pytest.raises(ConfigError, match="lora.rank = 64.*from 1 to 32"):
        parse_params(raw)


def test_unknown_key_suggests_near_miss():
    raw = copy.deepcopy(DEFAULTS)
    raw["lora"]["rnak"] = 2
    with pytest.raises(ConfigError, match=r"unknown key lora\.rnak \(did you mean lora\.rank\?\)"):
        parse_params(raw)
    raw = copy.deepcopy(DEFAULTS)
    raw["finetunee"] = {}
    with pytest.raises(ConfigError, match=r"unknown key finetunee \(did you mean finetune\?\)"):
        parse_params(raw)


def test_missing_key_is_named():
    raw = copy.deepcopy(DEFAULTS)
    del raw["finetune"]["steps"]
    with pytest.raises(ConfigError, match=r"missing key finetune\.steps"):
        parse_params(raw)


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="lora"):
        parse_params(with_value("lora", 3))


def test_types_are_canonical():
    raw = with_value("lora.alpha", 2)
    raw["finetune"]["lr"] = "1e-3"  # PyYAML reads exponent floats without a dot as strings
    raw["target"]["digit"] = 7
    params = parse_params(raw)
    assert params.lora.alpha == 2.0 and isinstance(params.lora.alpha, float)
    assert params.finetune.lr == 0.001
    assert params.target.digit == 7
    assert params.lora.targets == ("linear1", "linear2", "linear3")


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_replay_too_small_for_the_batch_is_refused():
    raw = with_value("finetune.replay", 0.04)  # 0.4 of a sample per batch of 10: would silently be 0
    with pytest.raises(ConfigError, match=r"finetune.replay = 0.04 is invalid: expected 0, or at least 0.1"):
        parse_params(raw)
    raw["finetune"]["replay"] = 0.05  # rounds half up to one sample
    assert parse_params(raw).finetune.replay == 0.05


def test_zoo_rank_limit_follows_model_size_not_lora_targets():
    """The zoo's adapters target every layer whatever lora.targets says: its rank is limited by all three."""
    raw = with_value("lora.targets", ["linear1", "linear2"])
    raw["lora"]["rank"] = 64  # allowed for lora (linear3 not targeted)...
    raw["zoo"]["rank"] = 10
    assert parse_params(raw).zoo.rank == 10
    raw["zoo"]["rank"] = 64  # ...but never for the zoo
    with pytest.raises(ConfigError, match=r"zoo.rank = 64 is invalid: expected an integer from 1 to 10"):
        parse_params(raw)
    raw["lora"]["rank"], raw["zoo"]["rank"] = 1, 8
    raw["model"]["hidden_size_2"] = 6  # linear2 (h1 -> 6) and linear3 (6 -> 10): min(in, out) is now 6
    with pytest.raises(ConfigError, match=r"zoo.rank = 8 is invalid: expected an integer from 1 to 6"):
        parse_params(raw)


def test_zoo_knobs_are_its_own():
    """lora.* and finetune.* experiments never change what the zoo trains; the zoo's own knobs do."""
    default = parse_params(copy.deepcopy(DEFAULTS)).zoo
    raw = copy.deepcopy(DEFAULTS)
    raw["lora"].update(rank=4, alpha=8, init="kaiming", scaling="rslora", impl="lowrank", targets=["linear1"])
    raw["finetune"].update(seed=5, steps=7, batch_size=3, lr=0.5, replay=0.5)
    other = parse_params(raw).zoo
    assert (other.lora(), other.finetune()) == (default.lora(), default.finetune())
    raw["zoo"].update(rank=2, alpha=3, seed=1, steps=20, batch_size=4, lr=0.01)
    zoo = parse_params(raw).zoo
    lora, finetune = zoo.lora(), zoo.finetune()
    assert (lora.rank, lora.alpha) == (2, 3.0) and lora.targets == LINEAR_NAMES  # every layer, whatever lora.targets
    assert (finetune.seed, finetune.steps, finetune.batch_size, finetune.lr) == (1, 20, 4, 0.01)
    assert finetune.replay == 0.0 and finetune.replay_per_batch == 0  # each adapter sees its digits only


@pytest.mark.parametrize(
    "replay,batch_size,expected",
    [(0.0, 10, 0), (0.1, 10, 1), (0.05, 10, 1), (0.04, 10, 0), (0.25, 10, 3), (0.15, 10, 2), (0.99, 10, 9),
     (0.5, 1, 0), (0.5, 3, 2)],
)
def test_replay_per_batch_rounds_half_up_and_keeps_one_target_sample(replay, batch_size, expected):
    assert FinetuneParams(batch_size=batch_size, replay=replay).replay_per_batch == expected
