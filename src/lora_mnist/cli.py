"""How a stage ends: the errors a user can fix, each printed as one line instead of a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class LoraMnistError(Exception):
    """Base class: any error a user can fix (bad params, bad data, tampered artifacts)."""


class ConfigError(LoraMnistError, ValueError):
    """A param in params.yaml is unknown, missing, of the wrong type or out of range."""


class DataError(LoraMnistError):
    """Input data is missing, corrupted or does not match its expected checksum."""


class ArtifactError(LoraMnistError):
    """A model, adapter or snapshot is missing, malformed or does not match what made it."""


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
