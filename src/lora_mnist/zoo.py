"""The adapter zoo: one LoRA adapter per digit (or per set of digits) on the same frozen base, with a record of
what was trained so that verify can check the saved files against it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lora_mnist.adapter import save_adapter
from lora_mnist.artifacts import json_bytes
from lora_mnist.config import FinetuneParams, LoraParams
from lora_mnist.data import load_split
from lora_mnist.finetuning import FinetuneSet, finetune_lora
from lora_mnist.idx import raw_dir, read_idx
from lora_mnist.integrity import digest
from lora_mnist.names import ZOO_RECORD
from lora_mnist.proof import adapter_factors, finetuned_base
from lora_mnist.runtime import numerics
from lora_mnist.selection import check_enough, fine_tuning_pool


def digits_set(data_root: str | Path, digits: Sequence[int], select_on: str, batch_size: int,
               knob: str = "zoo.digits") -> FinetuneSet:
    """Every training image of `digits` that fine-tuning may see (never the held-out validation images); too few
    for one batch is a DataError naming `knob`, the param that chose the digits."""
    labels = read_idx(raw_dir(data_root) / "train-labels-idx1-ubyte")
    rows = np.flatnonzero(np.isin(fine_tuning_pool(labels, select_on), list(digits))).astype(np.int64)
    check_enough(len(rows), digits[0] if len(digits) == 1 else list(digits), batch_size, knob)
    images, chosen = load_split(data_root, "train", rows=torch.from_numpy(rows))
    return FinetuneSet(images, chosen, len(rows), tuple(digits))


def train_adapter(model_path: str | Path, data: FinetuneSet, cfg: FinetuneParams, lora: LoraParams,
                  device: torch.device) -> tuple[nn.Module, list[float]]:
    """LoRA on the frozen pretrained model, trained on `data`'s digits only: finetune.* but no replay."""
    return finetune_lora(model_path, data, replace(cfg, replay=0.0), lora, device)


def training_record(model: nn.Module, data: FinetuneSet, losses: list[float]) -> dict:
    """What training left in memory, as sha256 digests: the frozen base tensors (plain names, to compare with
    the snapshot's manifest) and the LoRA factors (PEFT names, to compare with the saved adapter)."""
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    return {
        "digits": list(data.digits), "train_size": data.n_target, "loss": {"first": losses[0], "last": losses[-1]},
        "base_sha256": {name: digest(v) for name, v in sorted(finetuned_base(state).items())},
        "adapter_sha256": {key: digest(v) for key, v in sorted(adapter_factors(state).items())},
    }


def save_zoo_adapter(model: nn.Module, out_dir: str | Path, record: dict) -> None:
    """The PEFT adapter and its training record, in one atomic step."""
    save_adapter(model, out_dir, extra={ZOO_RECORD: json_bytes(record)})


def make_adapter(data_root: str | Path, model_path: str | Path, digits: Sequence[int], select_on: str,
                 cfg: FinetuneParams, lora: LoraParams, device: torch.device, out_dir: str | Path,
                 knob: str = "zoo.digits") -> dict:
    """A zoo adapter for `digits`, trained and saved with its record (which includes how it was computed, so that
    the adapter's folder is all there is of it); returns the record. `knob` names the param in errors."""
    data = digits_set(data_root, digits, select_on, cfg.batch_size, knob)
    model, losses = train_adapter(model_path, data, cfg, lora, device)
    record = training_record(model, data, losses) | {"numerics": numerics(device)}
    save_zoo_adapter(model, out_dir, record)
    return record
