"""RichBoyNet's geometry without torch: layer names and shapes, for params validation and numpy readers."""

from __future__ import annotations

N_PIXELS = 28 * 28
N_CLASSES = 10
LINEAR_NAMES = ("linear1", "linear2", "linear3")


def layer_shapes(hidden_size_1: int, hidden_size_2: int) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each RichBoyNet Linear layer."""
    return {"linear1": (N_PIXELS, hidden_size_1), "linear2": (hidden_size_1, hidden_size_2),
            "linear3": (hidden_size_2, N_CLASSES)}
