"""DVC stage `download`: fetch and verify MNIST into `<out_dir>/MNIST/raw/` (data.source picks the source).

Test hook: LORA_MNIST_EXPECTED_MD5 may name a JSON file `{filename: [size, md5]}` whose checksums replace the
official ones, for synthetic data in a local directory only (see download.expected_checksums).
"""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "out_dir")
    # Imported here, inside run_stage: a Python without the dependencies then gets one line, not a traceback.
    from lora_mnist.config import load_params
    from lora_mnist.download import expected_checksums, fetch_mnist
    from lora_mnist.idx import raw_dir

    params = load_params()
    expected = expected_checksums(params.data.source)
    source = fetch_mnist(args.out_dir, params.data.source, expected)
    total = sum(size for size, _ in expected.values())
    print(f"MNIST from {source}: {len(expected)} files, {total:,} bytes, MD5 verified -> {raw_dir(args.out_dir)}")


if __name__ == "__main__":
    run_stage(main)
