"""The experiment table's headline numbers and the merged numerics record."""

from lora_mnist.summary import evaluate_headline, full_headline, merge_numerics, verify_headline


def test_headline_keys_are_short_and_unique_across_files():
    evaluate = {"accuracy": {"base": 0.9, "lora": 0.8}, "target": {"digit": 9, "wrong_base": 100, "wrong_lora": 10},
                "forgetting": {"others_accuracy": {"base": 0.91, "lora": 0.7}}, "param_count": {"lora": 6794}}
    full = {"accuracy": {"full": 0.6}, "target": {"wrong_full": 0}, "forgetting": {"others_accuracy": {"full": 0.5}}}
    files = [evaluate_headline(evaluate), full_headline(full), verify_headline({"passed": True, "tensors_checked": 18})]
    merged = {k: v for f in files for k, v in f.items()}
    assert len(merged) == sum(map(len, files))
    assert merged == {"acc_base": 0.9, "acc_lora": 0.8, "target": 9, "wrong_base": 100, "wrong_lora": 10,
                      "others_base": 0.91, "others_lora": 0.7, "lora_params": 6794, "acc_full": 0.6, "wrong_full": 0,
                      "others_full": 0.5, "verified": True, "tensors_verified": 18}
    assert max(map(len, merged)) <= 16  # the table at 160 columns has room for them


def test_numerics_merge_keeps_one_value_where_stages_agree_and_names_them_where_not():
    records = {"pretrain": {"cpu": "X", "torch_threads": 2}, "finetune": {"cpu": "X", "torch_threads": 1},
               "analyze": {"cpu": "X", "openblas_threads": 1}}
    assert merge_numerics(records) == {"cpu": "X", "openblas_threads": 1,
                                       "torch_threads": "pretrain=2; finetune=1"}
