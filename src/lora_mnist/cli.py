"""Run a stage's main so that user-fixable errors end in one clear line, not a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from lora_mnist.errors import LoraMnistError


def run_stage(main: Callable[[], None]) -> None:
    """Call `main`; a LoraMnistError prints `error: ...` and exits 1, a missing dependency names the fix, Ctrl-C
    exits 130."""
    try:
        main()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "lora_mnist":
            raise  # our own code is broken: a traceback is the useful report
        # dvc ran the stage with a Python that lacks the pinned dependencies (a system dvc, or no venv on PATH).
        print(f"error: {sys.executable} has no module {exc.name!r}: run dvc from the project's environment "
              "(`source .venv/bin/activate`, or `make repro` to create it)", file=sys.stderr)
        sys.exit(1)
    except LoraMnistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; no output was written", file=sys.stderr)
        sys.exit(130)


def parse_paths(description: str, *names: str) -> argparse.Namespace:
    """Parse a stage's positional path arguments (dvc.yaml's cmd passes them; they are written only there)."""
    parser = argparse.ArgumentParser(description=description)
    for name in names:
        parser.add_argument(name)
    return parser.parse_args()
