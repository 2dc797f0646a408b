"""params.yaml -> frozen, validated dataclasses: the one way params enter the code."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from lora_mnist.cli import ConfigError

DEVICES = ("cpu", "cuda", "mps", "auto")
NUMERICS = ("fast", "portable")  # numerics.py: what each mode pins
INITS = ("gaussian", "kaiming")
SCALINGS = ("standard", "rslora")
IMPLS = ("parametrize", "lowrank")
SELECT_ON = ("test", "validation")

# RichBoyNet's geometry, which the model params decide (model.py builds it; validation and numpy readers use it).
N_PIXELS = 28 * 28
N_CLASSES = 10
LINEAR_NAMES = ("linear1", "linear2", "linear3")


def layer_shapes(hidden_size_1: int, hidden_size_2: int) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each RichBoyNet Linear layer."""
    return {"linear1": (N_PIXELS, hidden_size_1), "linear2": (hidden_size_1, hidden_size_2),
            "linear3": (hidden_size_2, N_CLASSES)}


def _spec(kind: str, allowed: str, check: Any = None, choices: tuple = ()) -> dict:
    """Field metadata: the expected kind, a range check and the text shown when it fails."""
    return {"kind": kind, "allowed": allowed, "check": check, "choices": choices}


def _int(minimum: int, **kw: Any) -> Any:
    return field(metadata=_spec("int", f"an integer >= {minimum}", lambda v: v >= minimum), **kw)


def _positive_float(**kw: Any) -> Any:
    return field(metadata=_spec("float", "a number > 0", lambda v: math.isfinite(v) and v > 0), **kw)


def _choice(choices: tuple[str, ...], **kw: Any) -> Any:
    return field(metadata=_spec("str", f"one of {', '.join(choices)}", choices=choices), **kw)


@dataclass(frozen=True)
class DataParams:
    source: str = field(  # auto, torchvision, registry or a directory holding the four MNIST files
        default="auto", metadata=_spec("str", "auto, torchvision, registry or a directory path", lambda v: v != "")
    )


@dataclass(frozen=True)
class ModelParams:
    hidden_size_1: int = _int(1, default=1000)  # linear1: 784 -> hidden_size_1
    hidden_size_2: int = _int(1, default=2000)  # linear2: hidden_size_1 -> hidden_size_2


@dataclass(frozen=True)
class PretrainParams:
    seed: int = _int(0, default=0)  # drives the shuffle and the weight init
    epochs: int = _int(1, default=1)
    batch_size: int = _int(1, default=10)
    lr: float = _positive_float(default=0.001)  # Adam


@dataclass(frozen=True)
class TargetParams:
    digit: int | str = field(  # "auto": the digit the pretrained model gets wrong most (ties -> smallest)
        default="auto", metadata=_spec("digit", "auto or an integer 0-9")
    )
    # Where "auto" counts the errors: the test set (the seed's way) or held-out training images (validation).
    select_on: str = _choice(SELECT_ON, default="test")


@dataclass(frozen=True)
class FinetuneParams:
    seed: int = _int(0, default=0)  # drives the LoRA A init and the shuffle
    steps: int = _int(1, default=100)  # optimizer steps (the seed: 100 batches)
    batch_size: int = _int(1, default=10)
    lr: float = _positive_float(default=0.001)
    replay: float = field(  # fraction of each batch drawn from the other digits (0: the seed, target only)
        default=0.0, metadata=_spec("float", "a number from 0 up to (not including) 1", lambda v: 0 <= v < 1)
    )

    @property
    def replay_per_batch(self) -> int:
        """Samples per batch drawn from the other digits: replay * batch_size rounded half up, leaving at least one
        target sample."""
        return min(math.floor(self.replay * self.batch_size + 0.5), self.batch_size - 1)


@dataclass(frozen=True)
class LoraParams:
    rank: int = _int(1, default=1)  # also <= min(in, out) of every targeted layer (checked below)
    alpha: float = _positive_float(default=1.0)  # scale = alpha / rank (or / sqrt(rank) for rslora)
    targets: tuple[str, ...] = field(
        default=LINEAR_NAMES, metadata=_spec("targets", f"a non-empty list of distinct names from {list(LINEAR_NAMES)}")
    )
    init: str = _choice(INITS, default="gaussian")  # gaussian: A ~ N(0, 1) (the seed); kaiming: PEFT's default
    scaling: str = _choice(SCALINGS, default="standard")
    impl: str = _choice(IMPLS, default="parametrize")  # parametrize: W + B @ A (the seed) | lowrank: x @ A.T @ B.T


@dataclass(frozen=True)
class ZooParams:
    # One adapter per digit, each trained on that digit's images only, with knobs of its own: lora.* and
    # finetune.* experiments never re-train the zoo. Every adapter targets linear1-3, gaussian init, alpha / rank.
    digits: tuple[int, ...] = field(  # the base model's four worst digits: all ten cost too much time per repro
        default=(2, 3, 7, 9), metadata=_spec("digits", "a non-empty list of distinct digits 0-9")
    )
    # Two digits of the zoo whose adapters are summed, and compared with one adapter trained on both.
    compose: tuple[int, ...] = field(default=(3, 9), metadata=_spec("digits", "a list of two distinct digits 0-9",
                                                                     lambda v: len(v) == 2))
    rank: int = _int(1, default=1)
    alpha: float = _positive_float(default=1.0)
    seed: int = _int(0, default=0)  # draws each adapter's A and its batches
    steps: int = _int(1, default=100)
    batch_size: int = _int(1, default=10)
    lr: float = _positive_float(default=0.001)

    def lora(self) -> LoraParams:
        """The zoo's LoRA settings in the form fine-tuning takes."""
        return LoraParams(self.rank, self.alpha, LINEAR_NAMES, "gaussian", "standard", "parametrize")

    def finetune(self) -> FinetuneParams:
        """The zoo's training settings in the form fine-tuning takes: its digits only, no replay."""
        return FinetuneParams(self.seed, self.steps, self.batch_size, self.lr, 0.0)


@dataclass(frozen=True)
class Params:
    device: str = _choice(DEVICES, default="cpu")  # auto: cuda, then mps, then cpu
    numerics: str = _choice(NUMERICS, default="portable")  # portable: the same bits on Intel and AMD x86-64 CPUs
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    pretrain: PretrainParams = field(default_factory=PretrainParams)
    target: TargetParams = field(default_factory=TargetParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    lora: LoraParams = field(default_factory=LoraParams)
    zoo: ZooParams = field(default_factory=ZooParams)


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    value = list(value) if isinstance(value, tuple) else value  # as written in params.yaml
    return ConfigError(f"params: {key} = {value!r} is invalid: expected {allowed}")


def _is_digit(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9


def _convert(key: str, value: Any, meta: dict) -> Any:
    """Check one leaf value's type and range; return it in its canonical type."""
    kind, allowed = meta["kind"], meta["allowed"]
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind == "str":
        ok = isinstance(value, str) and (not meta["choices"] or value in meta["choices"])
    elif kind == "digit":
        ok = value == "auto" or _is_digit(value)
    elif kind == "digits":
        ok = isinstance(value, list) and len(value) > 0 and all(map(_is_digit, value)) and len(set(value)) == len(value)
        value = tuple(value) if ok else value
    else:  # targets
        ok = (
            isinstance(value, list)
            and len(value) > 0
            and all(isinstance(v, str) and v in LINEAR_NAMES for v in value)
            and len(set(value)) == len(value)
        )
        value = tuple(value) if ok else value
    if not ok or (meta["check"] is not None and not meta["check"](value)):
        raise _fail(key, value, allowed)
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from mapping `raw`, refusing unknown and missing keys."""
    if not isinstance(raw, dict):
        raise _fail(prefix.rstrip(".") or "params.yaml", raw, "a mapping of keys")
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            suggestion = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
            raise ConfigError(f"params: unknown key {prefix}{key}{suggestion}; allowed: {', '.join(known)}")
    values = {}
    for name, f in known.items():
        key = prefix + name
        if name not in raw:
            raise ConfigError(f"params: missing key {key}")
        sub = f.default_factory if is_dataclass(f.default_factory) else None  # type: ignore[arg-type]
        values[name] = _build(sub, raw[name], key + ".") if sub else _convert(key, raw[name], f.metadata)
    return cls(**values)


def parse_params(raw: Any) -> Params:
    """Validate a params mapping (as read from YAML) and return typed Params."""
    params = _build(Params, raw, "")
    shapes = layer_shapes(params.model.hidden_size_1, params.model.hidden_size_2)
    for key, rank, targets in (("lora.rank", params.lora.rank, params.lora.targets),
                               ("zoo.rank", params.zoo.rank, LINEAR_NAMES)):
        limit = min(min(shapes[name]) for name in targets)
        if rank > limit:
            raise _fail(key, rank, f"an integer from 1 to {limit} (min(in, out) of the targeted layers)")
    cfg = params.finetune
    if cfg.replay > 0 and cfg.replay_per_batch == 0:
        raise _fail("finetune.replay", cfg.replay, f"0, or at least {1 / cfg.batch_size:g} so that one sample of "
                    f"each batch of {cfg.batch_size} (finetune.batch_size) comes from the other digits")
    missing = [d for d in params.zoo.compose if d not in params.zoo.digits]
    if missing:
        raise _fail("zoo.compose", list(params.zoo.compose), f"two digits of zoo.digits {list(params.zoo.digits)} "
                    f"(no adapter is trained for {missing})")
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; any problem is one ConfigError naming the key."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"params: {path} not found (run from the project root)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"params: {path} is not valid YAML: {exc}") from None
    return parse_params(raw)
