"""End to end: `experiments/sweep.py` through DVC's queue on this machine, two workers, on the built synthetic project
(e2e.GRID: one pretrained model, two fine-tuning seeds, rank 2). Each experiment re-trains what its fine-tuning
seed changes and restores the rest from the run cache; pretraining per seed is covered where it is cheaper
(test_pipeline_e2e, test_cluster). The same grid on Dask, compared with this one: test_sweep_dask_e2e.py."""

from __future__ import annotations

import pandas as pd
from e2e import Repo, experiment_locks


def test_sweep_writes_one_row_per_setting_over_the_seeds(swept: Repo) -> None:
    table = pd.read_csv(swept.path / "experiments/sweep.csv")
    assert list(table["method"]) == ["base", "lora", "full"] and list(table["n"]) == [1, 2, 2]
    lora = table[table["method"] == "lora"].iloc[0]
    assert lora["rank"] == 2 and 0 <= lora["accuracy_mean"] <= 1 and lora["accuracy_ci95"] >= 0
    runs = pd.read_csv(swept.path / "experiments/sweep_runs.csv")
    assert len(runs) == 1 + 4  # 1 pretrained model; 2 seed pairs x (LoRA, full fine-tuning)
    assert (swept.path / "experiments/sweep.png").stat().st_size > 0
    assert sorted(experiment_locks(swept)) == [(0, 2), (1, 2)]  # one experiment per seed, each committed

