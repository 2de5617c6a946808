"""Shared plumbing of the workflow scripts: logging, JSON arguments, and errors turned into exit codes."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from typing import Callable

from .io import InputFileError
from .errors import NonFiniteLossError, Preempted, PREEMPTED_EXIT_CODE


def json_arg(text: str):
    """argparse type for a JSON value passed by a rule (its `params:`), e.g. --train '{"epochs": 3}'."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def run(main: Callable[[], None]) -> None:
    """Run a script's main; known failures print one clear line and exit non-zero without a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        main()
    except Preempted as exc:
        logging.warning("%s", exc)
        sys.exit(PREEMPTED_EXIT_CODE)
    except (InputFileError, NonFiniteLossError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        print(f"error: {exc}", file=sys.stderr)  # from io.atomic_path: names the file that was not written
        sys.exit(1)
