"""The two ticket-finding baselines of the tables: LTH (iterative magnitude pruning with rewinding) and Early-Bird.

Both train with the common `Trainer` (checkpointed, so an interrupted step resumes and ends with the same result)
and both produce a mask file in the common format. Training the resulting ticket is not done here: the generic
`sparse_train` rule trains `ticket/mask.pt` from `workflow.start_weights` of its directory (the rewind checkpoint
for LTH, the weights at the draw for EB), so every accuracy in the tables comes from the same loop.

LTH (Frankle & Carbin; IMP with rewinding as the authors' `main_imp.py --prune_type rewind_lt --rewind_epoch 3`).
Round k = 1..K, K = `workflow.lth_rounds(target, p)`. Round 1 trains the dense network from the seed's
initialisation and keeps its weights after `rewind_epoch` epochs: the rewind point (`round1/rewind.pt`; epoch 0 =
the initialisation itself, classic LTH). Round k > 1 loads the rewind point exactly and installs the mask of round
k-1. Each round trains `round_epochs` with a fresh optimiser, then prunes globally by |w| over all prunable
weights, keeping exactly `round(d_k * N)` weights among those still alive, with `d_k = max(target, (1 - p) ** k)`
and `d_K = target`. The ticket is the last mask trained from the rewind point.

Early-Bird (You et al., ICLR 2020), adapted to unstructured masks. The original draws *channel* masks from the
BatchNorm scaling factors (network slimming); here, as in the paper we reproduce, the mask is the global magnitude
mask of all prunable weights at the target density. During dense training the mask is taken at the end of every
epoch and kept in a FIFO of the last `window` masks; the ticket is drawn at the first epoch at which the FIFO is
full and the normalised Hamming distance (differing positions / prunable weights) between the newest mask and
each older one is `<= threshold` (the original code's rule). If that never happens the ticket is drawn at the last
epoch (`drawn_early: false`).

Compute spent is recorded in `cost.json` (search phase only); `total_cost` adds the ticket's training.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .data import DeviceData
from .io import InputFileError, read_json, write_csv, write_json
from .masks import Masks, build_meta, density as mask_density, load_mask_file, prunable_parameters, save_mask_file
from .models import load_weights, save_weights
from .provenance import provenance
from .pruning import global_topk_mask
from .train import Callback, Trainer, TrainConfig
from .workflow import lth_rounds

EB_NOTE = ("Unstructured adaptation of Early-Bird: the original (You et al., ICLR 2020) draws channel masks from "
           "the BatchNorm scaling factors; here the mask is the global magnitude mask of all prunable weights at "
           "the target density, taken at the end of every epoch of dense training.")

ROUND_COLUMNS = ("round", "trained_density", "final_acc", "best_acc", "target_density", "density", "epochs",
                 "steps", "train_seconds")


# --------------------------------------------------------------------------------------------------- common


@torch.no_grad()
def magnitude_mask(model: nn.Module, density: float, alive: Mapping[str, torch.Tensor] | None = None) -> Masks:
    """Global magnitude mask keeping exactly `round(density * N)` weights (CPU bool tensors).

    With `alive`, only weights set in it can be kept (pruned weights score -inf), so a mask never revives a weight.
    Raises ValueError when fewer weights are alive than asked for.
    """
    params = prunable_parameters(model)
    scores = {}
    for name, param in params.items():
        score = param.detach().abs().double()
        if alive is not None:
            score = score.masked_fill(~alive[name].to(score.device, torch.bool), -math.inf)
        scores[name] = score
    if alive is not None:
        total = sum(p.numel() for p in params.values())
        keep, left = int(round(density * total)), sum(int(alive[name].sum()) for name in params)
        if keep > left:
            raise ValueError(f"cannot keep {keep} weights (density {density}): only {left} are still alive")
    return {name: mask.cpu() for name, mask in global_topk_mask(scores, density).items()}


def _flatten(masks: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
    if isinstance(masks, torch.Tensor):
        return masks.reshape(-1).to("cpu", torch.bool)
    return torch.cat([m.reshape(-1).to("cpu", torch.bool) for m in masks.values()])


def hamming_distance(a: Mapping[str, torch.Tensor] | torch.Tensor, b: Mapping[str, torch.Tensor] | torch.Tensor) -> float:
    """Normalised Hamming distance of two masks: differing positions / total prunable weights (in [0, 1])."""
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor) and list(a) != list(b):
        raise ValueError("the two masks cover different layers")
    flat_a, flat_b = _flatten(a), _flatten(b)
    if flat_a.numel() != flat_b.numel() or flat_a.numel() == 0:
        raise ValueError(f"masks of different (or no) size: {flat_a.numel()} and {flat_b.numel()} weights")
    return int((flat_a ^ flat_b).sum()) / flat_a.numel()


def _pretrain_epochs(cost: Mapping) -> float:
    """All compute before the ticket's training, in epochs: the starting checkpoint's iterations plus the search.

    This is what the tables' "pre-training cost" column reads for a baseline (as `iters / steps_per_epoch` is for
    a PaI cell)."""
    return (cost.get("pretrain_iters") or 0) / cost["steps_per_epoch"] + cost["search_epochs"]


def total_cost(cost: Mapping, ticket_metrics: Mapping | None = None) -> dict:
    """The search cost of `cost.json` plus the ticket's training (its `metrics.json`), in epochs and steps.

    `search_*` is what finding the ticket cost (LTH: all rounds; EB: dense epochs until the draw); `ticket_*` its
    training by `sparse_train`; `total_*` their sum. Pretraining iterations (`pretrain_iters`) are kept apart.
    """
    out = dict(cost)
    ticket_epochs = ticket_steps = 0
    if ticket_metrics is not None:
        ticket_epochs, ticket_steps = int(ticket_metrics["epochs"]), int(ticket_metrics["steps"])
    out.update(ticket_epochs=ticket_epochs, ticket_steps=ticket_steps,
               total_epochs=int(cost["search_epochs"]) + ticket_epochs,
               total_steps=int(cost["search_steps"]) + ticket_steps)
    return out


# ------------------------------------------------------------------------------------------------------ LTH


def lth_round_density(round_index: int, target: float, prune_fraction: float) -> float:
    """Target density after round `round_index` (1-based): max(target, (1-p)^k), exactly `target` at the last."""
    rounds = lth_rounds(target, prune_fraction)
    if not 1 <= round_index <= rounds:
        raise ValueError(f"LTH to density {target} pruning {prune_fraction} per round has rounds 1..{rounds}, "
                         f"not {round_index}")
    if round_index == rounds:
        return float(target)
    return max(float(target), (1.0 - prune_fraction) ** round_index)


def lth_schedule(target: float, prune_fraction: float) -> list[float]:
    """The target density after each round."""
    return [lth_round_density(k, target, prune_fraction) for k in range(1, lth_rounds(target, prune_fraction) + 1)]


class RewindPoint(Callback):
    """Keeps the weights (BatchNorm statistics included) after `epoch` epochs of LTH's dense round; 0 = at the start.

    Held in the callback's state, so it is checkpointed with the run and survives a resume past that epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.weights: dict | None = None

    def capture(self, model: nn.Module) -> None:
        self.weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def on_epoch_end(self, trainer: Trainer, epoch: int, test_acc: float | None) -> bool:
        if epoch == self.epoch:
            self.capture(trainer.model)
        return False

    def state_dict(self) -> dict:
        return {"weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.weights = state["weights"]

    def __repr__(self) -> str:  # part of the round's checkpoint identity
        return f"RewindPoint(epoch={self.epoch})"


def lth_round_trainer(*, weights: str | Path, prev_mask: str | Path | None, round_index: int, target_density: float,
                      prune_fraction: float, data: DeviceData, cfg: TrainConfig, seed: int,
                      checkpoint: str | Path | None = None, callbacks: Sequence[Callback] = (),
                      progress: bool = True) -> tuple[Trainer, dict, dict | None]:
    """The Trainer of one LTH round: its starting weights loaded exactly (round 1: the initialisation; later: the
    rewind point), the previous round's mask installed (pruned weights zeroed), a fresh optimiser and schedule.
    Returns (trainer, weights meta, previous mask meta)."""
    rounds = lth_rounds(target_density, prune_fraction)
    if not 1 <= round_index <= rounds:
        raise ValueError(f"LTH round {round_index} out of range: density {target_density} with prune fraction "
                         f"{prune_fraction} takes rounds 1..{rounds}")
    net, weights_meta = load_weights(weights)
    masks, prev_meta = None, None
    if round_index == 1:
        if prev_mask is not None:
            raise ValueError("LTH round 1 trains the dense network; it takes no previous mask")
    else:
        if prev_mask is None:
            raise ValueError(f"LTH round {round_index} needs the mask of round {round_index - 1}")
        masks, prev_meta = load_mask_file(prev_mask, net)
        if prev_meta.get("method") != "lth" or prev_meta.get("round") != round_index - 1:
            raise InputFileError(f"mask file {prev_mask} is not the mask of LTH round {round_index - 1} "
                                 f"(method {prev_meta.get('method')!r}, round {prev_meta.get('round')!r})")
    identity = {"lth_round": round_index, "target_density": float(target_density), "prune_fraction": prune_fraction,
                "weights": str(weights), "prev_mask": str(prev_mask) if prev_mask else None,
                "callbacks": [repr(callback) for callback in callbacks]}
    trainer = Trainer(net, data, cfg, seed=seed, masks=masks, checkpoint=checkpoint, identity=identity,
                      callbacks=callbacks, progress=progress, desc=f"LTH round {round_index}/{rounds}")
    return trainer, weights_meta, prev_meta


def lth_round(*, weights: str | Path, prev_mask: str | Path | None, round_index: int, target_density: float,
              prune_fraction: float, data: DeviceData, cfg: TrainConfig, seed: int, out_mask: str | Path,
              out_json: str | Path, rewind_epoch: int = 0, out_rewind: str | Path | None = None,
              config_used: dict | None = None, progress: bool = True) -> dict:
    """One LTH round: train `cfg.epochs` with the previous round's mask from `weights`, prune by global magnitude.

    Round 1 (dense, from the initialisation) also writes `out_rewind`: its weights after `rewind_epoch` epochs,
    the point every later round and the ticket start from. Writes the round's mask file (meta: method "lth",
    round, target and achieved density, source = the weights it was trained from) and `out_json` (the round's
    record: density trained at and reached, accuracy, epochs, steps).
    """
    started = time.perf_counter()
    if (round_index == 1) != (out_rewind is not None):
        raise ValueError("LTH round 1, and only round 1, writes the rewind point (out_rewind)")
    if round_index == 1 and not 0 <= rewind_epoch < cfg.epochs:
        raise ValueError(f"lth.rewind_epoch ({rewind_epoch}) must lie in [0, round_epochs = {cfg.epochs})")
    checkpoint = Path(out_mask).with_name(".lth_state.pt")
    rewind = [RewindPoint(rewind_epoch)] if round_index == 1 else []
    trainer, weights_meta, _ = lth_round_trainer(
        weights=weights, prev_mask=prev_mask, round_index=round_index, target_density=target_density,
        prune_fraction=prune_fraction, data=data, cfg=cfg, seed=seed, checkpoint=checkpoint, callbacks=rewind,
        progress=progress)
    if rewind and rewind_epoch == 0:
        rewind[0].capture(trainer.model)  # before any step (a resume restores it from the checkpoint)
    rounds = lth_rounds(target_density, prune_fraction)
    trained_density = mask_density(trainer.masks) if trainer.masks is not None else 1.0
    metrics = trainer.fit()
    round_target = lth_round_density(round_index, target_density, prune_fraction)
    new_masks = magnitude_mask(trainer.model, round_target, alive=trainer.masks)
    meta = build_meta(
        new_masks, method="lth", target_density=round_target, run_target_density=float(target_density),
        round=round_index, rounds=rounds, prune_fraction=prune_fraction, seed=seed,
        model=weights_meta["model"], width=weights_meta["width"], dataset=weights_meta.get("dataset"),
        source=str(weights), start_iters=weights_meta.get("iters"),
        rewind_epoch=weights_meta.get("lth_rewind_epoch", rewind_epoch),
        previous_mask=str(prev_mask) if prev_mask else None, trained_density=trained_density)
    save_mask_file(out_mask, new_masks, meta)
    if rewind:
        trainer.model.load_state_dict(rewind[0].weights)
        save_weights(out_rewind, trainer.model, {**weights_meta, "lth_rewind_epoch": rewind_epoch,
                                                 "note": f"LTH rewind point: round 1 after {rewind_epoch} epochs"})
    record = {
        "round": round_index, "rounds": rounds, "prune_fraction": prune_fraction,
        "run_target_density": float(target_density), "trained_density": trained_density,
        "target_density": round_target, "density": meta["density"], "empty_layers": meta["empty_layers"],
        "final_acc": metrics["final_acc"], "best_acc": metrics["best_acc"], "best_epoch": metrics["best_epoch"],
        "epochs": metrics["epochs"], "steps": metrics["steps"], "steps_per_epoch": trainer.steps_per_epoch,
        "train_seconds": metrics["train_seconds"], "images_per_second": metrics["images_per_second"],
        "curve": metrics["curve"], "device": metrics["device"], "resumed_from": metrics["resumed_from"],
        "mask": str(out_mask), "previous_mask": str(prev_mask) if prev_mask else None, "weights": str(weights),
        "start_iters": weights_meta.get("iters"), "rewind": str(out_rewind) if out_rewind else None,
        "provenance": provenance(config=config_used, device=metrics["device"],
                                 wall_seconds=time.perf_counter() - started),
    }
    write_json(record, out_json)
    checkpoint.unlink(missing_ok=True)
    return record


def lth_summary(*, round_jsons: Sequence[str | Path], last_mask: str | Path, out_csv: str | Path,
                out_ticket: str | Path, out_cost: str | Path) -> dict:
    """Assemble the per-round table, the ticket (a copy of the last round's mask) and the search cost."""
    records = sorted((read_json(p, what="LTH round record") for p in round_jsons), key=lambda r: r["round"])
    if not records:
        raise ValueError("lth_summary needs at least one round record")
    rounds = records[0]["rounds"]
    if [r["round"] for r in records] != list(range(1, rounds + 1)):
        raise InputFileError(f"LTH round records {[str(p) for p in round_jsons]} are rounds "
                             f"{[r['round'] for r in records]}, expected 1..{rounds}")
    import pandas as pd

    write_csv(pd.DataFrame([{c: r[c] for c in ROUND_COLUMNS} for r in records]), out_csv)
    masks, meta = load_mask_file(last_mask)
    if meta.get("method") != "lth" or meta.get("round") != rounds:
        raise InputFileError(f"{last_mask} is not the mask of the last LTH round ({rounds})")
    fields = {k: v for k, v in meta.items() if k not in ("density", "layer_density", "empty_layers")}
    fields.update(target_density=meta["run_target_density"], ticket=True, ticket_of=str(last_mask),
                  note=f"LTH ticket: a copy of the round-{rounds} mask; train it from the rewind point "
                       "(round1/rewind.pt)")
    save_mask_file(out_ticket, masks, build_meta(masks, **fields))
    spe = records[0]["steps_per_epoch"]
    cost = {
        "method": "lth", "rounds": rounds, "prune_fraction": records[0]["prune_fraction"],
        "pretrain_iters": records[0]["start_iters"], "steps_per_epoch": spe,
        "dense_epochs": records[0]["epochs"], "dense_steps": records[0]["steps"],
        "sparse_epochs": sum(r["epochs"] for r in records[1:]), "sparse_steps": sum(r["steps"] for r in records[1:]),
        "search_epochs": sum(r["epochs"] for r in records), "search_steps": sum(r["steps"] for r in records),
        "search_train_seconds": sum(r["train_seconds"] for r in records),
        "density": meta["density"], "target_density": meta["run_target_density"],
        "note": "search = all LTH rounds (round 1 dense, later rounds sparse); pretrain_epochs = the starting "
                "checkpoint's iterations (in epochs) + search, i.e. all compute before the ticket's training; add the "
                "ticket's training (ticket/metrics.json) for the total, see fullspectrum.baselines.total_cost",
    }
    cost["pretrain_epochs"] = _pretrain_epochs(cost)
    write_json(cost, out_cost)
    return cost


# ----------------------------------------------------------------------------------------------- Early-Bird


class EarlyBirdCallback(Callback):
    """Draws the Early-Bird ticket: a FIFO of the last `window` per-epoch magnitude masks at `density`.

    `history` holds one entry per epoch: `distances[i]` is the normalised Hamming distance between the newest mask
    and the i-th older mask in the FIFO (oldest first). Its state (FIFO, history, ticket) is checkpointed with the
    Trainer, so a resumed run draws the same ticket at the same epoch.
    """

    def __init__(self, density: float, window: int, threshold: float) -> None:
        if window < 2:
            raise ValueError(f"early_bird.window must be >= 2, got {window}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"early_bird.threshold must lie in [0, 1], got {threshold}")
        self.density, self.window, self.threshold = float(density), int(window), float(threshold)
        self.fifo: list[torch.Tensor] = []  # flat bool masks, oldest first
        self.history: list[dict] = []
        self.ticket: Masks | None = None
        self.draw_epoch: int | None = None
        self.drawn_early: bool | None = None

    @property
    def drawn(self) -> bool:
        return self.ticket is not None

    def observe(self, masks: Mapping[str, torch.Tensor], epoch: int, last: bool = False,
                test_acc: float | None = None) -> bool:
        """Feed the mask of `epoch`; return True when the ticket is drawn (converged, or `last`)."""
        if self.drawn:
            return True
        flat = _flatten(masks)
        self.fifo.append(flat)
        if len(self.fifo) > self.window:
            self.fifo.pop(0)
        distances = [hamming_distance(flat, older) for older in self.fifo[:-1]]
        full = len(self.fifo) == self.window
        converged = full and max(distances) <= self.threshold
        self.history.append({"epoch": epoch, "distances": distances,
                             "max_distance": max(distances) if distances else None, "fifo_full": full,
                             "test_acc": test_acc})
        if converged or last:
            self.ticket = {name: m.detach().to("cpu", torch.bool).clone() for name, m in masks.items()}
            self.draw_epoch, self.drawn_early = epoch, converged
            return True
        return False

    def on_epoch_end(self, trainer: Trainer, epoch: int, test_acc: float | None) -> bool:
        if self.drawn:
            return True
        masks = magnitude_mask(trainer.model, self.density)
        return self.observe(masks, epoch, last=epoch >= trainer.epochs, test_acc=test_acc)

    def state_dict(self) -> dict:
        return {
            "settings": [self.density, self.window, self.threshold],
            "fifo_numel": [int(m.numel()) for m in self.fifo],
            "fifo": [torch.from_numpy(np.packbits(m.numpy())) for m in self.fifo],
            "history": json.dumps(self.history),
            "ticket": self.ticket, "draw_epoch": self.draw_epoch, "drawn_early": self.drawn_early,
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["settings"]) != [self.density, self.window, self.threshold]:
            raise ValueError(f"Early-Bird checkpoint made with (density, window, threshold) {state['settings']}, "
                             f"not {[self.density, self.window, self.threshold]}")
        self.fifo = [torch.from_numpy(np.unpackbits(packed.numpy(), count=n).astype(bool))
                     for packed, n in zip(state["fifo"], state["fifo_numel"])]
        self.history = json.loads(state["history"])
        self.ticket, self.draw_epoch, self.drawn_early = state["ticket"], state["draw_epoch"], state["drawn_early"]


def early_bird(*, weights: str | Path, data: DeviceData, cfg: TrainConfig, density: float, window: int,
               threshold: float, seed: int, out_mask: str | Path, out_weights: str | Path, out_json: str | Path,
               out_cost: str | Path, config_used: dict | None = None, progress: bool = True) -> dict:
    """Dense training from `weights` until the Early-Bird ticket is drawn (at most `cfg.epochs` epochs).

    Writes the ticket mask, the weights at the draw epoch (a self-describing weights file; the ticket's training
    starts from them), `out_json` (draw epoch, distance history, ...) and `out_cost`.
    """
    started = time.perf_counter()
    net, weights_meta = load_weights(weights)
    callback = EarlyBirdCallback(density, window, threshold)
    checkpoint = Path(out_json).with_name(".eb_state.pt")
    identity = {"early_bird": [float(density), int(window), float(threshold)], "weights": str(weights)}
    trainer = Trainer(net, data, cfg, seed=seed, checkpoint=checkpoint, identity=identity, callbacks=[callback],
                      progress=progress, desc=f"early-bird d={density}")
    metrics = trainer.fit()  # a run resumed after its draw does not train on: the checkpoint says it stopped
    if not callback.drawn:  # cannot happen: the last epoch always draws
        raise RuntimeError("Early-Bird training ended without drawing a ticket")
    model = trainer.model
    weights_out_meta = {k: v for k, v in weights_meta.items() if k != "pretrain_metrics"}
    weights_out_meta.update(iters=trainer.step, eb_draw_epoch=callback.draw_epoch, start_weights=str(weights),
                            start_iters=weights_meta.get("iters"))
    save_weights(out_weights, model, weights_out_meta)
    meta = build_meta(callback.ticket, method="eb", target_density=float(density), seed=seed,
                      model=weights_meta["model"], width=weights_meta["width"], dataset=weights_meta.get("dataset"),
                      source=str(out_weights), start_weights=str(weights), draw_epoch=callback.draw_epoch,
                      drawn_early=callback.drawn_early, window=window, threshold=threshold, note=EB_NOTE)
    save_mask_file(out_mask, callback.ticket, meta)
    record = {
        "method": "eb", "draw_epoch": callback.draw_epoch, "drawn_early": callback.drawn_early,
        "budget_epochs": trainer.epochs, "dense_epochs": trainer.epoch, "dense_steps": trainer.step,
        "steps_per_epoch": trainer.steps_per_epoch, "window": window, "threshold": threshold,
        "target_density": float(density), "density": meta["density"], "empty_layers": meta["empty_layers"],
        "acc_at_draw": metrics["final_acc"], "history": callback.history, "dense_curve": metrics["curve"],
        "train_seconds": metrics["train_seconds"], "device": metrics["device"],
        "resumed_from": metrics["resumed_from"], "start_weights": str(weights), "mask": str(out_mask),
        "weights": str(out_weights), "note": EB_NOTE,
        "provenance": provenance(config=config_used, device=metrics["device"],
                                 wall_seconds=time.perf_counter() - started),
    }
    cost = {
        "method": "eb", "pretrain_iters": weights_meta.get("iters"), "steps_per_epoch": trainer.steps_per_epoch,
        "dense_epochs": trainer.epoch, "dense_steps": trainer.step, "sparse_epochs": 0, "sparse_steps": 0,
        "search_epochs": trainer.epoch, "search_steps": trainer.step, "search_train_seconds": metrics["train_seconds"],
        "budget_epochs": trainer.epochs, "drawn_early": callback.drawn_early,
        "density": meta["density"], "target_density": float(density),
        "note": "search = dense epochs until the Early-Bird draw; pretrain_epochs = the starting checkpoint's "
                "iterations (in epochs) + search, i.e. all compute before the ticket's training; add the ticket's "
                "training (ticket/metrics.json) for the total, see fullspectrum.baselines.total_cost",
    }
    cost["pretrain_epochs"] = _pretrain_epochs(cost)
    write_json(record, out_json)
    write_json(cost, out_cost)
    checkpoint.unlink(missing_ok=True)
    return record
