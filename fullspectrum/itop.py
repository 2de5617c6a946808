"""ITOP / SET dynamic sparse training as a Trainer callback, and the snapshot tickets of Figures 1-2.

The run starts from an ERK mask at `itop.density` on the seed's initialisation (the pretraining checkpoint @0)
and trains with the one training loop (`train.Trainer`). Every `update_frequency` optimiser steps (never at the
last step), per prunable layer:

- the death rate is cosine-decayed over the run to `eta_min = 0.005`,
  `rate(t) = eta_min + (death_rate - eta_min) / 2 * (1 + cos(pi * t / T))`, `T` the run's total steps and `t` the
  steps taken (ITOP's `CosineDecay`, sparselearning/core.py:67-80 of the authors' code: CosineAnnealingLR with its
  default eta_min 0.005, stepped once per optimiser step, core.py:299-304; itop_tickets_generation.py:436-437);
- `ceil(rate * nnz)` active weights with the smallest magnitude are removed (ties: lower flat index first);
- the same number is regrown at uniformly random inactive positions, drawn on the CPU from the callback's own
  seeded generator (so the same seed gives the same masks on every device). A position pruned in this same
  update is never chosen while another inactive position is free; only when a layer has fewer free positions
  than it prunes (a layer denser than `1 - rate`, e.g. one ERK keeps dense) are the missing ones drawn at random
  among the just-pruned positions. Those keep their weight and momentum (they were never really gone, as in
  ITOP, which does not zero pruned weights before regrowing); every other regrown weight and its momentum start
  at exactly zero.

So every layer keeps exactly its number of active weights. The exploration rate is the share of prunable weights
that have ever been active (ITOP's "total fired weights").

Snapshots: snapshot 0 is the ERK mask on the initialisation; then after every `snapshot_every`-th update the mask
and the current weights are saved as a ticket, `snap{k}/mask.pt` (common mask format, meta: method "itop",
snapshot index, step, exploration rate) and `snap{k}/weights.pt` (self-describing weights file). Each ticket is
then trained to completion from those weights by the generic `sparse_train` step, as in the authors'
`itop_tickets_training.py` (which fine-tunes the `..._step_start.pth` state: the snapshot's mask and weights).
The schedule is a function of the config alone (`workflow.itop_snapshot_steps`), so Snakemake knows every output
before the run.

Resume: the callback's state (its generator, the ever-active masks, the update and snapshot logs) is checkpointed
with the trainer. Snapshots are first written to `{itop_dir}/.itop_work/` (not a declared output, so Snakemake
does not delete it before a rerun) and copied into place when the run ends.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Mapping

import torch

from . import workflow
from .data import DeviceData
from .io import atomic_path, write_json
from .masks import build_meta, prunable_parameters, save_mask_file
from .models import load_weights, save_weights
from .provenance import provenance
from .pruning import make_mask
from .train import Callback, Trainer, TrainConfig, describe_device

WORK_DIR = ".itop_work"


# The death rate's floor: the authors' CosineDecay(death_rate, T_max, eta_min=0.005) (sparselearning/core.py:68).
DEATH_RATE_MIN = 0.005


def death_rate_at(step: int, total_steps: int, death_rate: float, eta_min: float = DEATH_RATE_MIN) -> float:
    """The cosine-decayed death rate after `step` of `total_steps` steps:
    eta_min + (death_rate - eta_min) / 2 * (1 + cos(pi * step / T)), from `death_rate` down to `eta_min`."""
    cosine = 1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)
    return eta_min + (death_rate - eta_min) / 2.0 * cosine


def prune_count(rate: float, active: int) -> int:
    """Weights to remove from a layer with `active` weights: ceil(rate * active), at most `active`."""
    return min(active, math.ceil(round(rate * active, 9)))


@dataclasses.dataclass
class RegrowResult:
    mask: torch.Tensor  # the new bool mask (same shape as the input, on the CPU)
    pruned: torch.Tensor  # flat indices removed (the `count` smallest active magnitudes)
    regrown: torch.Tensor  # flat indices activated (may include pruned ones only when nothing else was free)

    @property
    def restored(self) -> torch.Tensor:
        """Positions pruned and regrown in the same update (they keep their weight and momentum)."""
        return self.regrown[torch.isin(self.regrown, self.pruned)]

    @property
    def grown(self) -> torch.Tensor:
        """Positions that were inactive before the update and are active after it (new weights, at zero)."""
        return self.regrown[~torch.isin(self.regrown, self.pruned)]


def prune_and_regrow(weight: torch.Tensor, mask: torch.Tensor, count: int,
                     generator: torch.Generator) -> RegrowResult:
    """Remove the `count` smallest-magnitude active weights of one layer and regrow `count` random inactive ones.

    Computed on the CPU. Ties in magnitude are broken by flat index (stable sort); regrowth draws one random
    permutation of the free positions from `generator`. Positions pruned now are used only when fewer than
    `count` other inactive positions exist, and then chosen at random among the pruned ones.
    """
    flat_mask = mask.detach().reshape(-1).to("cpu", torch.bool)
    active = flat_mask.nonzero().squeeze(1)
    if not 0 <= count <= len(active):
        raise ValueError(f"cannot prune {count} of {len(active)} active weights")
    magnitude = weight.detach().reshape(-1).to("cpu", torch.float32).abs()
    order = torch.sort(magnitude[active], stable=True).indices
    pruned = active[order[:count]]
    free = (~flat_mask).nonzero().squeeze(1)
    if len(free) >= count:
        regrown = free[torch.randperm(len(free), generator=generator)[:count]]
    else:
        extra = pruned[torch.randperm(len(pruned), generator=generator)[:count - len(free)]]
        regrown = torch.cat([free, extra])
    new = flat_mask.clone()
    new[pruned] = False
    new[regrown] = True
    return RegrowResult(new.reshape(mask.shape), pruned, regrown)


def update_explored(explored: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> dict:
    """The ever-active masks after `masks` has been active (element-wise OR, on the CPU)."""
    return {name: explored[name] | masks[name].detach().to("cpu", torch.bool) for name in explored}


def exploration_rate(explored: Mapping[str, torch.Tensor]) -> float:
    """Share of all prunable weights that have ever been active."""
    return sum(int(m.sum()) for m in explored.values()) / sum(m.numel() for m in explored.values())


SnapshotWriter = Callable[[int, Trainer, int, float], None]  # (index, trainer, step, exploration rate)


class ITOPCallback(Callback):
    """Prune-and-regrow every `update_frequency` steps; snapshot every `snapshot_every`-th update."""

    def __init__(self, *, masks: Mapping[str, torch.Tensor], total_steps: int, update_frequency: int,
                 death_rate: float, snapshot_every: int, seed: int, on_snapshot: SnapshotWriter | None = None):
        if update_frequency < 1 or snapshot_every < 1:
            raise ValueError("update_frequency and snapshot_every must be >= 1")
        if not 0.0 <= death_rate <= 1.0:
            raise ValueError(f"death_rate must lie in [0, 1], got {death_rate}")
        self.total_steps, self.update_frequency = total_steps, update_frequency
        self.death_rate, self.snapshot_every = death_rate, snapshot_every
        self.on_snapshot = on_snapshot
        self.generator = torch.Generator().manual_seed(seed)
        self.explored = {name: m.detach().to("cpu", torch.bool).clone() for name, m in masks.items()}
        self.updates: list[dict] = []
        self.snapshots: list[dict] = [{"index": 0, "step": 0, "update": 0,
                                       "exploration": exploration_rate(self.explored)}]

    @property
    def exploration(self) -> float:
        return exploration_rate(self.explored)

    def is_update_step(self, step: int) -> bool:
        return step % self.update_frequency == 0 and 0 < step < self.total_steps

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        if self.is_update_step(step):
            self.update(trainer, step)

    @torch.no_grad()
    def update(self, trainer: Trainer, step: int) -> dict:
        if trainer.masks is None:
            raise ValueError("ITOP needs a sparse run (the trainer has no masks)")
        rate = death_rate_at(step, self.total_steps, self.death_rate)
        params = prunable_parameters(trainer.model)
        new_masks, grown, totals = {}, {}, {"pruned": 0, "regrown": 0, "restored": 0}
        for name, param in params.items():
            mask = trainer.masks[name]
            result = prune_and_regrow(param, mask, prune_count(rate, int(mask.sum())), self.generator)
            new_masks[name] = result.mask
            grown[name] = result.mask & ~mask.detach().to("cpu", torch.bool)  # logical layout (any memory format)
            totals["pruned"] += len(result.pruned)
            totals["regrown"] += len(result.regrown)
            totals["restored"] += len(result.restored)
        trainer.set_masks(new_masks)  # zeroes the pruned weights and their momentum
        for name, param in params.items():  # regrown weights start at zero, momentum too (already so: belt and braces)
            fresh = grown[name].to(param.device)
            param.masked_fill_(fresh, 0.0)
            buffer = trainer.optimizer.momentum_buffer(param)
            if buffer is not None:
                buffer.masked_fill_(fresh, 0.0)
        self.explored = update_explored(self.explored, trainer.masks)
        number = len(self.updates) + 1
        record = {"update": number, "step": step, "rate": rate, **totals, "exploration": self.exploration}
        self.updates.append(record)
        if number % self.snapshot_every == 0:
            index = len(self.snapshots)
            self.snapshots.append({"index": index, "step": step, "update": number, "exploration": self.exploration})
            if self.on_snapshot is not None:
                self.on_snapshot(index, trainer, step, self.exploration)
        return record

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "explored": dict(self.explored),
                "updates": [dict(u) for u in self.updates], "snapshots": [dict(s) for s in self.snapshots]}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.explored = {name: m.to(torch.bool) for name, m in state["explored"].items()}
        self.updates = [dict(u) for u in state["updates"]]
        self.snapshots = [dict(s) for s in state["snapshots"]]


def _copy_into_place(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def run_itop(*, weights: str | Path, data: DeviceData, cfg: TrainConfig, density: float, update_frequency: int,
             death_rate: float, snapshot_every: int, seed: int, out_dir: str | Path,
             expected_snapshots: int | None = None, config_used: dict | None = None, progress: bool = True) -> dict:
    """Dynamic sparse training from an ERK mask on the weights in `weights` (the seed's initialisation).

    Writes `{out_dir}/snap{k}/mask.pt`, `{out_dir}/snap{k}/weights.pt` for every snapshot and `{out_dir}/itop.json`
    (schedule, per-update log, exploration curve, snapshots, the DST run's own metrics). `cfg.epochs` is the
    run's length (`itop.epochs`). With `expected_snapshots` (what the workflow declared as outputs), a schedule
    that would give another number stops the run before any training.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    work = out_dir / WORK_DIR
    net, weights_meta = load_weights(weights)
    steps_per_epoch = math.ceil(data.train_size / cfg.batch_size)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    snapshot_steps = workflow.itop_snapshot_steps(total_steps, update_frequency, snapshot_every)
    if expected_snapshots is not None and len(snapshot_steps) != expected_snapshots:
        raise ValueError(
            f"this ITOP run would make {len(snapshot_steps)} snapshots ({data.train_size} training images, batch "
            f"{cfg.batch_size}, {total_steps} steps) but the workflow expects {expected_snapshots}; the training "
            "set size differs from workflow.TRAIN_SIZES")
    masks = make_mask(net, "erk", density, seed=seed)
    identity = {"model": weights_meta["model"], "width": weights_meta["width"],
                "dataset": weights_meta.get("dataset"), "weights": str(weights),
                "itop": {"density": density, "update_frequency": update_frequency, "death_rate": death_rate,
                         "snapshot_every": snapshot_every}}

    def write_snapshot(index: int, trainer: Trainer, step: int, exploration: float) -> None:
        folder = work / f"snap{index}"
        meta = build_meta(trainer.masks, method="itop", target_density=density, seed=seed,
                          model=weights_meta["model"], dataset=weights_meta.get("dataset"), source=str(weights),
                          snapshot=index, step=step, exploration=exploration, total_steps=total_steps,
                          update_frequency=update_frequency, death_rate=death_rate, snapshot_every=snapshot_every)
        save_mask_file(folder / "mask.pt", trainer.masks, meta)
        save_weights(folder / "weights.pt", trainer.model,
                     {"model": weights_meta["model"], "num_classes": weights_meta["num_classes"],
                      "head_bias": weights_meta.get("head_bias", True), "width": weights_meta["width"], "dataset": weights_meta.get("dataset"), "seed": seed,
                      "iters": step, "itop_snapshot": index, "itop_step": step, "source": str(weights)})

    callback = ITOPCallback(masks=masks, total_steps=total_steps, update_frequency=update_frequency,
                            death_rate=death_rate, snapshot_every=snapshot_every, seed=seed,
                            on_snapshot=write_snapshot)
    trainer = Trainer(net, data, cfg, seed=seed, masks=masks, checkpoint=work / "state.pt", identity=identity,
                      callbacks=[callback], progress=progress, desc=f"itop {weights_meta['model']}")
    write_snapshot(0, trainer, 0, callback.exploration)  # the ERK mask on the initialisation (masked weights)
    metrics = trainer.fit()
    if [s["step"] for s in callback.snapshots] != snapshot_steps:
        raise RuntimeError(f"ITOP snapshots at steps {[s['step'] for s in callback.snapshots]}, "
                           f"expected {snapshot_steps}")

    for snap in callback.snapshots:
        for name in ("mask.pt", "weights.pt"):
            _copy_into_place(work / f"snap{snap['index']}" / name, out_dir / f"snap{snap['index']}" / name)
            snap[name.split(".")[0]] = str(out_dir / f"snap{snap['index']}" / name)
    summary = {
        "dataset": weights_meta.get("dataset"), "model": weights_meta["model"], "width": weights_meta["width"],
        "seed": seed, "weights": str(weights), "density": density, "update_frequency": update_frequency,
        "death_rate": death_rate, "snapshot_every": snapshot_every, "total_steps": total_steps,
        "update_steps": workflow.itop_update_steps(total_steps, update_frequency),
        "snapshot_steps": snapshot_steps,
        "updates": callback.updates,
        "exploration": [{"step": 0, "exploration": callback.snapshots[0]["exploration"]}]
                       + [{"step": u["step"], "exploration": u["exploration"]} for u in callback.updates],
        "final_exploration": callback.exploration,
        "snapshots": callback.snapshots,
        "train": metrics,
        "provenance": provenance(config=config_used, device=describe_device(data.device),
                                 wall_seconds=time.perf_counter() - started),
    }
    write_json(summary, out_dir / "itop.json")
    shutil.rmtree(work, ignore_errors=True)
    return summary
