"""DVC stage `numerics`: one record of how every compute stage computed (CPU, kernels, MKL branch, threads...)."""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "records_dir", "numerics_out")
    from lora_mnist.numerics import numerics

    print(numerics(args.records_dir, args.numerics_out))


if __name__ == "__main__":
    run_stage(main)
