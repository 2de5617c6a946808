"""K masks trained at once: the training loop of `train.Trainer` over a fused model (`fused.fuse_models`).

The members share the starting point's seed and so every batch and crop: one pass of the input pipeline, one
forward of the grouped model, one masked SGD step over the fused tensors. A member whose loss turns non-finite is
frozen (its block of every tensor zeroed, its masks emptied: `fused.reset_member`) and named; the others train on
untouched, since no member reads another's channels. Its checkpoint is the fused state, so a resume is exact.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from .data import DeviceData
from .fused import fuse_masks, fuse_models, member_losses, reset_member
from .masks import density
from .train import Trainer, TrainConfig


class FusedTrainer(Trainer):
    """Train `models[k]` under `masks[k]` for every k at once; `metrics()` gives one record per member."""

    def __init__(self, models: Sequence[nn.Module], masks: Sequence[Mapping[str, torch.Tensor]], data: DeviceData,
                 cfg: TrainConfig, *, seed: int, names: Sequence[str], checkpoint=None, identity: Mapping | None = None,
                 progress: bool = True, desc: str = "train fused") -> None:
        if not len(models) == len(masks) == len(names) or not models:
            raise ValueError("FusedTrainer needs one mask and one name per model, and at least one model")
        self.names = list(names)
        self.member_density = [density(m) for m in masks]
        self.diverged: dict[str, str] = {}
        # fuse_models copies what it reads, so the members need no copy of their own
        super().__init__(fuse_models(models), data, cfg, seed=seed, masks=fuse_masks(masks), checkpoint=checkpoint,
                         identity={"member_names": self.names, **(identity or {})}, progress=progress, desc=desc)

    @property
    def members(self) -> int:
        return len(self.names)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_member = member_losses(logits, y, label_smoothing=self.cfg.label_smoothing)
        return per_member.sum(), per_member

    @torch.no_grad()
    def evaluate(self) -> list[float]:
        self.model.eval()
        correct = torch.zeros(self.members, device=self.device, dtype=torch.long)
        for x, y in self.data.test_batches():
            with self._autocast():
                correct += (self.forward(x).argmax(-1) == y[:, None]).sum(0)
        return [100.0 * int(c) / len(self.data.test_y) for c in correct.cpu()]

    def _check_losses(self, losses: list[torch.Tensor], first_step: int) -> list[float | None]:
        """Each member's mean loss over the steps (None for a frozen one); a member whose loss became
        non-finite is frozen here and named in `self.diverged`."""
        if not losses:
            return [None] * self.members
        values = torch.stack(losses).float().cpu()  # [steps, members]
        means: list[float | None] = []
        for k, name in enumerate(self.names):
            if name in self.diverged:
                means.append(None)
                continue
            bad = (~torch.isfinite(values[:, k])).nonzero()
            if len(bad):
                self._freeze(k, f"{name}: loss became {values[bad[0, 0], k].item()} at epoch {self.epoch + 1}, step "
                                f"{first_step + int(bad[0, 0]) + 1}; no metrics were written for it. Lower the "
                                "learning rate or check the mask and the input weights.")
                means.append(None)
            else:
                means.append(float(values[:, k].mean()))
        return means

    def _freeze(self, k: int, message: str) -> None:
        self.diverged[self.names[k]] = message
        reset_member(self.model, k, self.members, masks=self.masks, momentum=self.optimizer.buffers)
        self.set_masks(self.masks)  # the optimiser's copies of the masks, with the member's emptied

    def extra_state(self) -> dict:
        return {"diverged": dict(self.diverged)}

    def load_extra_state(self, state: dict) -> None:
        self.diverged = dict(state.get("diverged", {}))

    def _postfix(self, train_loss: list, test_acc: list | None) -> dict:
        alive = [k for k, name in enumerate(self.names) if name not in self.diverged]
        if not alive:
            return {"members": "all diverged"}
        loss = sum(train_loss[k] for k in alive) / len(alive)
        acc = "-" if test_acc is None else f"{max(test_acc[k] for k in alive):.1f}"
        return {"mean loss": f"{loss:.3f}", "best acc": acc}

    def member_metrics(self) -> dict[str, dict | None]:
        """{name: what `Trainer.metrics()` gives for a single mask, or None for a diverged member}."""
        shared = super().metrics()
        out: dict[str, dict | None] = {}
        for k, name in enumerate(self.names):
            if name in self.diverged:
                out[name] = None
                continue
            curve = [{**h, "train_loss": h["train_loss"][k],
                      "test_acc": None if h["test_acc"] is None else h["test_acc"][k]} for h in self.history]
            evaluated = [h for h in curve if h["test_acc"] is not None]
            best = max(evaluated, key=lambda h: h["test_acc"]) if evaluated else None
            out[name] = {
                **shared,
                "final_acc": evaluated[-1]["test_acc"] if evaluated else None,
                "best_acc": best["test_acc"] if best else None,
                "best_epoch": best["epoch"] if best else None,
                "curve": curve,
                "density": self.member_density[k],
                "trained_with": {"mode": "fused", "members": self.names},
            }
        return out
