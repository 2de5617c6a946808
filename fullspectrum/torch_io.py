"""Torch files written atomically and loaded safely (weights_only), with errors that name the file."""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .io import InputFileError, atomic_path


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # Python I/O: a full disk raises OSError(ENOSPC)
        torch.save(obj, handle)


def load_torch(path: str | os.PathLike, what: str = "file") -> Any:
    """`torch.load(weights_only=True)` with errors that name the file and say what to do.

    `weights_only=True` refuses pickles that would run code on load; such a file is reported as unsafe. Anything
    else that fails to load (empty, cut short, damaged, a text file, another format) is "not a readable torch
    file", in one line whatever the content made torch raise.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} {path} does not exist; run the step that makes it (or check the path).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc).upper():  # a pickled object other than tensors and containers: refused, not run
            blocked = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line.upper()), "")
            raise InputFileError(
                f"{what} {path} holds objects that are unsafe to load ({blocked}); weights_only=True refused it. "
                "Only tensors, numbers, strings and containers of them are accepted."
            ) from exc
        raise InputFileError(_unreadable(what, path, exc)) from exc
    except Exception as exc:  # torch raises whatever its parser hit first (KeyError on text, EOFError, ...)
        raise InputFileError(_unreadable(what, path, exc)) from exc


def _unreadable(what: str, path: Path, exc: BaseException) -> str:
    reason = " ".join(str(exc).split()) or ("empty file" if path.stat().st_size == 0 else "no message")
    if "WeightsUnpickler error:" in reason:  # torch's advice around it (weights_only=False) must not be followed
        reason = reason.split("WeightsUnpickler error:", 1)[1].split(" Check the documentation", 1)[0].strip()
    if len(reason) > 100:
        reason = reason[:97] + "..."
    return (f"{what} {path} is not a readable torch file (truncated or corrupted, or not written by torch.save: "
            f"{type(exc).__name__}: {reason}); delete it and rerun the step that makes it, or check the path.")


def fingerprint(tensors: Mapping[str, torch.Tensor] | None) -> str | None:
    """A content hash of named tensors (a state dict, a mask): what a resumable step checks before resuming."""
    if tensors is None:
        return None
    digest = hashlib.sha256()
    for name, tensor in tensors.items():
        digest.update(name.encode())
        data = tensor.detach().to("cpu").contiguous()
        digest.update(str(data.dtype).encode())
        digest.update((data.view(torch.uint8) if data.dtype == torch.bool else data).numpy().tobytes())
    return digest.hexdigest()[:16]
