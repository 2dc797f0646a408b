"""DVC stage `finetune_full`: the baseline LoRA is measured against: fine-tune ALL weights on the same batches, score
it, and analyse the singular values of its update."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "data_root", "pretrained", "indices", "selection", "metrics_out", "headline_out",
                       "analysis_out", "numerics_out", "loss_out", "spectra_png_out", "spectrum1_out",
                       "spectrum2_out", "spectrum3_out")
    from lora_mnist.config import load_params

    params = load_params()
    from lora_mnist.numerics import pin

    pin(params.numerics)  # before numpy or torch loads
    from lora_mnist.lora.finetune import finetune_full

    paths = vars(args)
    spectra = [paths.pop(f"spectrum{i}_out") for i in (1, 2, 3)]
    print(finetune_full(params.device, params.numerics, params.finetune, **paths, spectrum_outs=spectra))


if __name__ == "__main__":
    run_stage(main)
