"""Metric dicts with stable keys, built from per-digit counts (pure Python)."""

from __future__ import annotations


def per_digit(counts: list[int]) -> dict[str, int]:
    """{"0": n0, ..., "9": n9}: stable metric keys."""
    return {str(d): int(n) for d, n in enumerate(counts)}


def forgetting(totals: list[int], wrong: dict[str, list[int]], digit: int, baseline: str = "base") -> dict:
    """Accuracy on the target digit and on all other digits per model, and which digit lost most.

    `totals[d]` is the number of test images of digit d; `wrong[model][d]` the wrong predictions among them.
    """
    others = [d for d in range(len(totals)) if d != digit]
    n_others = sum(totals[d] for d in others)
    out: dict = {
        "target_accuracy": {m: 1 - w[digit] / totals[digit] for m, w in wrong.items()},
        "others_accuracy": {m: 1 - sum(w[d] for d in others) / n_others for m, w in wrong.items()},
    }
    for model, counts in wrong.items():
        if model == baseline:
            continue
        increase = {d: counts[d] - wrong[baseline][d] for d in others}
        worst = max(others, key=lambda d: (increase[d], -d))  # ties -> smallest digit
        out[model] = {"most_hurt_digit": worst, "most_hurt_extra_wrong": increase[worst],
                      "extra_wrong_others": sum(increase.values())}
    return out
