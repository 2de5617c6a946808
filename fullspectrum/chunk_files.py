"""A chunk's files (fullspectrum.chunk trains them): its work folder, its summary, and a member's copy into its
own mask directory. Without torch: the copy is a light job of its own (rule chunk_member) in the analysis env."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .errors import NonFiniteLossError
from .io import InputFileError

SUMMARY = "chunk.json"


def work_dir(out: str | os.PathLike) -> Path:
    """Where a chunk is built: beside its folder, left in place by a failed job, renamed into place when done."""
    out = Path(out)
    return out.with_name(f".{out.name}.work")


def publish_member(chunk: str | os.PathLike, name: str, metrics_out: str | os.PathLike,
                   graph_out: str | os.PathLike) -> None:
    """Copy a member's metrics.json and graph.csv from its chunk's folder into its own mask directory (each file
    written whole, then renamed); a diverged member is an error that says why."""
    chunk = Path(chunk)
    summary = json.loads((chunk / SUMMARY).read_text())
    if name not in summary["members"]:
        raise InputFileError(f"{chunk} trained no member {name!r} (it has {', '.join(summary['members'])}); "
                             f"delete {chunk} so the chunk is trained again")
    if summary["members"][name]["diverged"]:
        raise NonFiniteLossError(summary["members"][name]["diverged"])
    for source, target in ((chunk / name / "metrics.json", Path(metrics_out)), (chunk / name / "graph.csv",
                                                                                Path(graph_out))):
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
