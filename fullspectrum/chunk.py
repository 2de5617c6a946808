"""One job, many masks: a chunk of a search's selections (or of an ITOP run's tickets) trained in one process.

One import, one dataset load and, on CUDA, one autotune serve every member. `sequential` trains the members one
after another with the single-mask loop (on the CPU each member's metrics.json is bit-identical to a job of its
own); `fused` trains them at once as one grouped model (`fused_train.FusedTrainer`). A member whose loss becomes
non-finite is named in chunk.json and gets no metrics; the others finish.

Everything is built in a work folder beside the chunk's folder, which a failed or killed job leaves in place (it is
no Snakemake output): finished members and the training state survive, and a rerun resumes. The work folder
becomes the chunk's folder in one rename once every member is done, so a chunk folder is always complete.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

from .chunk_files import SUMMARY, work_dir
from .data import DeviceData
from .errors import NonFiniteLossError
from .fused_train import FusedTrainer
from .io import InputFileError, write_json
from .masks import load_mask_file
from .models import load_weights
from .runs import graph_metrics, mask_record, train_mask
from .train import TrainConfig

MODES = ("sequential", "fused")
FUSED_STATE = ".fused_state.pt"
MEMBER_STATE = ".train_state.pt"  # runs.train_mask's checkpoint, beside each member's metrics.json
MODE_FILE = "mode"  # the mode the work folder's training was started in


class ChunkModeError(InputFileError):
    """A chunk's training state was made in the other mode."""


@dataclasses.dataclass(frozen=True)
class Member:
    """A mask to train: its name in the chunk (its mask directory's leaf), its mask file and starting weights."""

    name: str
    mask: str
    weights: str


def _claim_mode(work: Path, mode: str) -> None:
    """Record the mode the work folder's training starts in; refuse to go on in the other one."""
    record = work / MODE_FILE
    found = record.read_text().strip() if record.exists() else None
    if found is None:
        record.write_text(mode)
    elif found != mode:
        raise ChunkModeError(
            f"{work} holds training state made in train.mode {found}, not {mode}: set train.mode: {found} to resume "
            f"it, or delete {work} to start this chunk over in {mode} mode")


def train_chunk(members: Sequence[Member], *, data: DeviceData, cfg: TrainConfig, seed: int, mode: str,
                out: str | os.PathLike, config_used: dict | None = None, progress: bool = True) -> dict:
    """Write {out}/{name}/metrics.json and graph.csv for every member that trains to the end, and {out}/chunk.json
    (each member's status, the mode, the time taken). Returns chunk.json's content."""
    if mode not in MODES:
        raise ValueError(f"train.mode must be one of {MODES}, got {mode!r}")
    if len({m.name for m in members}) != len(members) or not members:
        raise ValueError(f"a chunk needs members with distinct names, got {[m.name for m in members]}")
    started = time.perf_counter()
    out, work = Path(out), work_dir(out)
    work.mkdir(parents=True, exist_ok=True)
    for member in members:  # seconds of CPU each; written first, as a single mask's job does
        graph = work / member.name / "graph.csv"
        if not graph.exists():
            graph.parent.mkdir(exist_ok=True)
            print(graph_metrics(weights=member.weights, mask=member.mask, out=graph), flush=True)
    _claim_mode(work, mode)
    train = _train_fused if mode == "fused" else _train_sequential
    diverged = train(members, data=data, cfg=cfg, seed=seed, work=work, config_used=config_used, progress=progress)
    summary = {"mode": mode, "members": {m.name: {"mask": m.mask, "weights": m.weights,
                                                   "diverged": diverged.get(m.name)} for m in members},
               "wall_seconds": time.perf_counter() - started}
    write_json(summary, work / SUMMARY)
    (work / MODE_FILE).unlink()
    if out.exists():  # a chunk folder Snakemake did not remove (a run with --keep-incomplete, say)
        shutil.rmtree(out)
    os.replace(work, out)
    return summary


def _train_sequential(members, *, data, cfg, seed, work, config_used, progress) -> dict[str, str]:
    diverged = {}
    for member in members:
        metrics = work / member.name / "metrics.json"
        if metrics.exists():  # finished before the job was stopped
            continue
        try:
            train_mask(weights=member.weights, mask=member.mask, data=data, cfg=cfg, seed=seed, out=metrics,
                       config_used=config_used, progress=progress, desc=f"train {member.name}")
        except NonFiniteLossError as exc:
            diverged[member.name] = str(exc)
            (work / member.name / MEMBER_STATE).unlink(missing_ok=True)
    return diverged


def _train_fused(members, *, data, cfg, seed, work, config_used, progress) -> dict[str, str]:
    started = time.perf_counter()
    nets, masks, metas = [], [], []
    for member in members:
        net, weights_meta = load_weights(member.weights)
        member_masks, mask_meta = load_mask_file(member.mask, net)
        nets.append(net)
        masks.append(member_masks)
        metas.append((weights_meta, mask_meta))
    trainer = FusedTrainer(nets, masks, data, cfg, seed=seed, names=[m.name for m in members],
                           checkpoint=work / FUSED_STATE, progress=progress, desc=f"train {len(members)} fused",
                           identity={"members": [(m.mask, m.weights, repr(meta[1]))
                                                 for m, meta in zip(members, metas)]})
    trainer.fit()
    trained = trainer.member_metrics()
    for member, (weights_meta, mask_meta) in zip(members, metas):
        metrics = trained[member.name]
        if metrics is not None:
            write_json(mask_record(metrics, weights=member.weights, mask=member.mask, weights_meta=weights_meta,
                                   mask_meta=mask_meta, config_used=config_used,
                                   wall_seconds=time.perf_counter() - started), work / member.name / "metrics.json")
    (work / FUSED_STATE).unlink(missing_ok=True)
    return dict(trainer.diverged)
