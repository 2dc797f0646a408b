"""DVC stage `finetune`: LoRA on the frozen pretrained model, trained on the target digit only, then scored against
the base model on the test set and its update analysed; one process, so one `import torch` per LoRA experiment."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data_root", "pretrained", "base_logits", "indices", "selection", "full_analysis",
                       "lora_out", "metrics_out", "evaluation_out", "headline_out", "analysis_out", "numerics_out",
                       "loss_out", "wrong_out", "confusion_base_out", "confusion_lora_out")
    from lora_mnist.config import load_params

    params = load_params()
    from lora_mnist.numerics import pin

    pin(params.numerics)  # before numpy or torch loads
    from lora_mnist.lora.finetune import finetune

    print(finetune(params.device, params.numerics, params.finetune, params.lora, **vars(args)))


if __name__ == "__main__":
    run_stage(main)
