"""The experiment table's columns (the few numbers people compare) and the record of how they were computed.

Each stage registers its own short headline file with DVC; its detailed metrics file (same numbers and many
more) stays beside it. Keys are short and unique across files, so `dvc exp show` needs no path prefixes.
"""

from __future__ import annotations

from typing import Any


def evaluate_headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """Accuracy base/LoRA, the target digit and its test errors, accuracy on the other digits, LoRA size."""
    others = metrics["forgetting"]["others_accuracy"]
    return {
        "acc_base": metrics["accuracy"]["base"], "acc_lora": metrics["accuracy"]["lora"],
        "target": metrics["target"]["digit"],
        "wrong_base": metrics["target"]["wrong_base"], "wrong_lora": metrics["target"]["wrong_lora"],
        "others_base": others["base"], "others_lora": others["lora"],
        "lora_params": metrics["param_count"]["lora"],
    }


def full_headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The full fine-tuning baseline: accuracy, target errors, accuracy on the other digits."""
    return {"acc_full": metrics["accuracy"]["full"], "wrong_full": metrics["target"]["wrong_full"],
            "others_full": metrics["forgetting"]["others_accuracy"]["full"]}


def zoo_headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The zoo: how many adapters, how many cut their own digit's errors, and those errors summed over adapters."""
    adapters = metrics["adapters"].values()
    return {"zoo_adapters": len(adapters), "zoo_improved": sum(a["wrong_lora"] < a["wrong_base"] for a in adapters),
            "zoo_wrong": sum(a["wrong_lora"] for a in adapters)}


def verify_headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """Did every check pass, over how many tensors."""
    return {"verified": metrics["passed"], "tensors_verified": metrics["tensors_checked"]}


def merge_numerics(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One value per field where every stage that records it agrees, else `stage=value; ...`: short and stable."""
    merged: dict[str, Any] = {}
    for key in sorted({k for record in records.values() for k in record}):
        values = {stage: record[key] for stage, record in records.items() if key in record}
        distinct = set(map(str, values.values()))
        merged[key] = next(iter(values.values())) if len(distinct) == 1 else "; ".join(
            f"{stage}={value}" for stage, value in values.items())
    return merged
