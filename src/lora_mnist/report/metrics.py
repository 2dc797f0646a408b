"""The metrics people read: the test-set comparison of models (accuracy, errors on the target digit, forgetting on
the others) and the headline files, the few numbers `dvc exp show` tabulates. Pure Python.

Each stage registers its own short headline file with DVC; its detailed metrics file (same numbers and many
more) stays beside it. Keys are short and unique across files, so `dvc exp show` needs no path prefixes.
"""

from __future__ import annotations

from typing import Any

from lora_mnist.artifacts import per_digit


def compare(totals: list[int], accuracy: dict[str, float], wrong: dict[str, list[int]], digit: int) -> dict:
    """The test-set comparison of several models (the first is the baseline): the metrics JSON layout."""
    return {
        "accuracy": accuracy,
        "wrong": {model: per_digit(counts) for model, counts in wrong.items()},
        "target": {"digit": digit, **{f"wrong_{model}": counts[digit] for model, counts in wrong.items()}},
        "forgetting": forgetting(totals, wrong, digit, baseline=next(iter(wrong))),
    }


def forgetting(totals: list[int], wrong: dict[str, list[int]], digit: int, baseline: str = "base") -> dict:
    """Accuracy on the target digit and on all other digits per model, and which digit lost most.

    `totals[d]` is the number of test images of digit d; `wrong[model][d]` the wrong predictions among them.
    """
    others = [d for d in range(len(totals)) if d != digit]
    n_others = sum(totals[d] for d in others)
    out: dict = {  # None where there is nothing to measure (possible on tiny synthetic test sets)
        "target_accuracy": {m: 1 - w[digit] / totals[digit] if totals[digit] else None for m, w in wrong.items()},
        "others_accuracy": {m: 1 - sum(w[d] for d in others) / n_others if n_others else None
                            for m, w in wrong.items()},
    }
    for model, counts in wrong.items():
        if model == baseline:
            continue
        increase = {d: counts[d] - wrong[baseline][d] for d in others}
        worst = max(others, key=lambda d: (increase[d], -d))  # ties -> smallest digit
        out[model] = {"most_hurt_digit": worst, "most_hurt_extra_wrong": increase[worst],
                      "extra_wrong_others": sum(increase.values())}
    return out


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
