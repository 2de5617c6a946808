"""Atomic writes and checked reads, so a killed job or a full disk never leaves a file that looks finished.

Free of torch, so the tables and figures (fullspectrum.analysis) run in an environment without it;
fullspectrum.torch_io adds the torch files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


class InputFileError(ValueError):
    """An input file is missing, truncated, corrupted or of the wrong kind; the message names it."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block finishes.

    The temporary name starts with a dot so Snakemake never mistakes it for an output. On any error the
    temporary file is removed, and a full disk is reported as such with the name of the file not written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared like any file
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if _no_space(exc):
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path}; nothing was written "
                          "there. Free some space and rerun.") from exc
        raise


def _no_space(exc: BaseException) -> bool:
    """Whether `exc` is, or was raised while handling, a full disk (torch.save reports one as a RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", path)


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} {path} does not exist; run the step that makes it.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{what} {path} is not valid JSON ({exc}); delete it and rerun.") from exc


def write_csv(frame, path: str | os.PathLike, **kwargs) -> None:
    """Write a pandas DataFrame atomically (no index unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)


def read_csv(path: str | os.PathLike, required_columns=(), what: str = "CSV file", **kwargs):
    """Read a CSV (`kwargs` go to pandas.read_csv) and check it has the columns the caller relies on."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} {path} does not exist; run the step that makes it.")
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{what} {path} cannot be parsed ({exc}); delete it and rerun.") from exc
    missing = [c for c in required_columns if c not in frame.columns]
    if missing:
        raise InputFileError(f"{what} {path} lacks column(s) {missing}; it was made by another version or "
                             "edited by hand. Delete it and rerun the step that makes it.")
    return frame


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
