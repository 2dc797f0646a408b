"""DVC stage `download`: fetch and verify MNIST into `<out_dir>/MNIST/raw/` (data.source picks the source).

Test hook: LORA_MNIST_EXPECTED_MD5 may name a JSON file `{filename: [size, md5]}` whose checksums replace the
official ones, for synthetic data in a local directory only (see lora_mnist.base.download.expected_checksums).
"""

from lora_mnist.cli import parse_paths, run_stage


def main() -> None:
    args = parse_paths(__doc__, "out_dir")
    # Imported here, inside run_stage: a Python without the dependencies then gets one line, not a traceback.
    from lora_mnist.config import load_params

    params = load_params()
    from lora_mnist.base.download import download

    print(download(params.data.source, args.out_dir))


if __name__ == "__main__":
    run_stage(main)
