"""DVC stage: fetch and verify MNIST into `<out_dir>/MNIST/raw/`.

Usage: python stages/download.py <out_dir>   (data.source from params.yaml picks the source)

Test hook: if the env var LORA_MNIST_EXPECTED_MD5 names a JSON file `{filename: [size, md5], ...}`, those
checksums replace the official ones. It exists only so end-to-end tests can run on synthetic data.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lora_mnist.cli import run_stage


def expected_checksums(source: str) -> dict[str, tuple[int, str]]:
    """The official checksums, or the test override named by LORA_MNIST_EXPECTED_MD5 (local directories only)."""
    from lora_mnist.artifacts import read_json
    from lora_mnist.errors import DataError
    from lora_mnist.idx import MNIST_FILES

    path = os.environ.get("LORA_MNIST_EXPECTED_MD5")
    if not path:
        return MNIST_FILES
    if source in ("auto", "torchvision", "registry"):
        raise DataError(f"LORA_MNIST_EXPECTED_MD5 is set but data.source = {source!r}: the override is only for "
                        "synthetic test data in a local directory; unset it to download the real MNIST")
    print(f"warning: checking MNIST against {path} (LORA_MNIST_EXPECTED_MD5), not the official MD5s", file=sys.stderr)
    raw = read_json(path)
    if not (isinstance(raw, dict) and set(raw) == set(MNIST_FILES)
            and all(isinstance(v, list) and len(v) == 2 for v in raw.values())):
        raise DataError(f"{path}: expected {{filename: [size, md5]}} for {sorted(MNIST_FILES)}")
    return {name: (int(size), str(md5)) for name, (size, md5) in raw.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="e.g. data/raw (files land in data/raw/MNIST/raw/)")
    args = parser.parse_args()
    # Imported here, inside run_stage: a Python without the dependencies then gets one line, not a traceback.
    from lora_mnist.config import load_params
    from lora_mnist.download import fetch_mnist
    from lora_mnist.idx import raw_dir

    params = load_params("params.yaml")
    expected = expected_checksums(params.data.source)
    source = fetch_mnist(args.out_dir, params.data.source, expected)
    total = sum(size for size, _ in expected.values())
    print(f"MNIST from {source}: {len(expected)} files, {total:,} bytes, MD5 verified -> "
          f"{raw_dir(args.out_dir)}")


if __name__ == "__main__":
    run_stage(main)
