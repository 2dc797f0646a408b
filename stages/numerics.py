"""DVC stage `numerics`: one record of how every compute stage computed (CPU, kernels, MKL branch, threads...)."""

from pathlib import Path

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "records_dir", "numerics_out")

    from lora_mnist.artifacts import read_json, write_json
    from lora_mnist.errors import ArtifactError
    from lora_mnist.summary import merge_numerics

    # Each compute stage wrote <records_dir>/<stage>.json; they only change when the machine or thread count does.
    records = {p.stem: read_json(p) for p in sorted(Path(args.records_dir).glob("*.json"))}
    if not records:
        raise ArtifactError(f"{args.records_dir}: no numerics records (*.json) from the compute stages")
    merged = merge_numerics(records)
    write_json(args.numerics_out, merged)
    print(f"numerics: {len(records)} stages on {merged.get('cpu')}, ATen {merged.get('aten_capability')}, "
          f"MKL {merged.get('mkl_cbwr')}")


if __name__ == "__main__":
    run_stage(main)
