"""The sweep's grid, its table of runs from dvc.api.exp_show() records, and means with 95 % intervals."""

import math

import pandas as pd
import pytest

from lora_mnist.sweep.grid import FULL, QUICK, Grid, aggregate, mean_ci95, queue_batches, runs_table, separated, t975


def test_mean_and_t_interval_on_known_numbers():
    mean, half = mean_ci95(pd.Series([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert mean == 3.0
    assert half == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5))  # t(0.975, 4) * s / sqrt(n)
    assert mean_ci95(pd.Series([7.0]))[0] == 7.0 and math.isnan(mean_ci95(pd.Series([7.0]))[1])
    assert t975(1) == 12.706 and t975(30) == 2.042 and 1.96 < t975(200) < 1.98


def test_grids_cover_what_the_issue_asks():
    assert len(FULL.pretrain_seeds) >= 3 and len(FULL.finetune_seeds) >= 5
    assert {1, 4, 16} <= set(FULL.ranks) and set(FULL.replays) == {0.0, 0.1}
    assert len(QUICK.pretrain_seeds) == 2


def test_queue_batches_expand_to_the_grid_and_drop_linear3_above_rank_10():
    batches = queue_batches(Grid((0, 1), (0, 1, 2), (1, 4, 16), (0.0, 0.1)))
    assert len(batches) == 2  # ranks 1 and 4 on all layers; 16 on linear1 and linear2 only
    first, second = ({arg.split("=")[0]: arg.split("=")[1] for arg in batch[1::2]} for batch in batches)
    assert first == {"pretrain.seed": "0,1", "finetune.seed": "0,1,2", "lora.rank": "1,4", "finetune.replay": "0.0,0.1",
                     "lora.targets": "[linear1,linear2,linear3]"}
    assert second["lora.rank"] == "16" and second["lora.targets"] == "[linear1,linear2]"


def _exp(rev, created, pseed, fseed, rank, replay, acc_lora, acc_full=0.5):
    return {"rev": rev, "Created": created, "pretrain.seed": pseed, "finetune.seed": fseed, "lora.rank": rank,
            "finetune.replay": replay, "acc_lora": acc_lora, "wrong_lora": 10.0, "others_lora": 0.9,
            "acc_full": acc_full, "wrong_full": 0.0, "others_full": 0.4,
            "acc_base": 0.95 + pseed / 100, "wrong_base": 100.0, "others_base": 0.96}


def test_runs_table_keeps_the_newest_run_per_setting_and_one_full_run_per_seeds():
    records = [
        _exp("workspace", None, 0, 0, 1, 0.0, 0.11),
        _exp("a", "2026-01-02", 0, 0, 1, 0.0, 0.9),
        _exp("b", "2026-01-01", 0, 0, 1, 0.0, 0.1),  # an older run of the same setting
        _exp("c", "2026-01-01", 0, 0, 4, 0.0, 0.8),  # same seeds, other rank: the same full fine-tuning run
        {"rev": "d", "Created": "2026-01-01", "pretrain.seed": 0, "acc_lora": None},  # failed
    ]
    runs = runs_table(records)
    lora = runs[runs["method"] == "lora"].sort_values("rank")
    assert lora["accuracy"].tolist() == [0.9, 0.8]
    assert len(runs[runs["method"] == "full"]) == 1
    assert runs[runs["method"] == "base"]["accuracy"].tolist() == [0.95]  # one pretrained model


def test_aggregate_gives_one_row_per_setting_with_n_mean_and_interval():
    records = [_exp(str(i), f"2026-01-0{i + 1}", i // 2, i % 2, 1, 0.0, acc, acc_full=0.5 + i / 100)
               for i, acc in enumerate([0.90, 0.92, 0.94, 0.96])]
    table = aggregate(runs_table(records))
    assert list(table.columns) == ["rank", "replay", "method", "n", "accuracy_mean", "accuracy_ci95",
                                   "target_wrong_mean", "target_wrong_ci95", "others_accuracy_mean",
                                   "others_accuracy_ci95"]
    lora = table[table["method"] == "lora"].iloc[0]
    assert lora["n"] == 4 and lora["accuracy_mean"] == pytest.approx(0.93)
    assert lora["accuracy_ci95"] == pytest.approx(3.182 * pd.Series([0.90, 0.92, 0.94, 0.96]).std() / 2)
    assert lora["target_wrong_ci95"] == 0.0
    full = table[table["method"] == "full"].iloc[0]
    assert pd.isna(full["rank"]) and full["n"] == 4 and full["accuracy_mean"] == pytest.approx(0.515)
    assert separated(lora, full, "accuracy") and not separated(lora, lora, "accuracy")
    base = table[table["method"] == "base"].iloc[0]
    assert base["n"] == 2 and base["accuracy_mean"] == pytest.approx(0.955)  # pretraining seeds 0 and 1
    assert list(table["method"]) == ["base", "lora", "full"]
