"""The one training loop behind dense pretraining and every sparse run (PaI, PAGS/PEGS, LTH, EB, ITOP tickets).

Masked SGD: after every optimiser step, weights and momentum buffers of all prunable layers are multiplied by
their masks in one fused `_foreach_mul_`. State (model, optimiser, RNG, masks, callbacks, epoch, step) is written
atomically at the first epoch end `checkpoint_minutes` after the last write (0: every epoch), at the end, and on
SIGTERM/SIGUSR1, so a killed or preempted run resumes where it stopped and ends with the same bits as an
uninterrupted one (on the CPU). Writing by time, not by epoch, is what keeps a 250-epoch CIFAR run from writing
250 full checkpoints to a cluster's shared file system.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data import DeviceData
from .errors import NonFiniteLossError, Preempted
from .io import InputFileError
from .torch_io import fingerprint, load_torch, save_torch
from .masks import check_masks, density, prunable_parameters
from .sgd import MaskedSGD

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run; their hash guards against resuming a checkpoint made with others."""

    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimiser steps (dense pretraining counts iterations)
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"  # cosine | multistep | constant
    milestones: tuple[float, ...] = (0.5, 0.75)  # multistep: fractions of the epochs (epoch int(m * epochs))
    gamma: float = 0.1
    label_smoothing: float = 0.0
    augment: bool = True
    compile: bool = False
    eval_every: int = 1  # epochs between test evaluations (the last epoch is always evaluated)
    # When state is written (see the module docstring); not part of a run's identity: changing it keeps a resume.
    checkpoint_minutes: float = dataclasses.field(default=0.0, metadata={"identity": False})

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "multistep", "constant"):
            raise ValueError(f"schedule must be cosine, multistep or constant, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")

    @classmethod
    def from_mapping(cls, values: Mapping, **overrides) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        merged = {k: v for k, v in {**values, **overrides}.items() if k in known}
        if "milestones" in merged:
            merged["milestones"] = tuple(merged["milestones"])
        return cls(**merged)

    def identity(self) -> dict:
        """The settings that make a run's results what they are."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("identity", True)}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


class Callback:
    """Hooks into the loop (Early-Bird draws, ITOP prune-and-regrow). Its state is checkpointed with the run."""

    def on_step_end(self, trainer: "Trainer", step: int) -> None:
        pass

    def on_epoch_end(self, trainer: "Trainer", epoch: int, test_acc: float | None) -> bool:
        """Return True to stop training after this epoch."""
        return False

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def lr_factor(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at `step` (0-based) of `total_steps`.

    Cosine decays every step. MultiStep changes at epoch boundaries, as the authors' per-epoch
    `MultiStepLR(milestones=[int(E/2), int(3E/4)])` does: milestone fraction m becomes epoch int(m * E).
    """
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    epochs = math.ceil(total_steps / steps_per_epoch)
    epoch = step // steps_per_epoch
    return cfg.gamma ** sum(epoch >= int(m * epochs) for m in cfg.milestones)


class SignalFlag:
    """Turns SIGTERM/SIGUSR1 into a flag the loop checks between steps (never mid-update)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.raised: int | None = None
        self._previous = {}

    def __enter__(self) -> "SignalFlag":
        for sig in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Train `model` on `data` under `cfg`, keeping the pruned weights of `masks` at exactly zero."""

    def __init__(self, model: nn.Module, data: DeviceData, cfg: TrainConfig, *, seed: int,
                 masks: Mapping[str, torch.Tensor] | None = None, checkpoint: str | os.PathLike | None = None,
                 identity: Mapping | None = None, callbacks: Sequence[Callback] = (), progress: bool = True,
                 desc: str = "train") -> None:
        self.device = data.device
        self.cuda = self.device.type == "cuda"
        self.model = model.to(self.device)
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        self.data, self.cfg, self.seed = data, cfg, seed
        self.callbacks = list(callbacks)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.checkpoint_seconds = 60.0 * cfg.checkpoint_minutes
        self._last_write = time.monotonic()
        self.checkpoint_bytes = 0  # written over the whole run, resumes included
        self.checkpoints_written = 0
        # What makes a checkpoint this run's: settings, seed, device, and the content of the starting weights and
        # masks (a mask file rewritten with other contents at the same path must not be resumed).
        self.identity = {"train": cfg.identity(), "seed": seed, "device": self.device.type,
                         "initial_state": fingerprint(model.state_dict()), "masks": fingerprint(masks),
                         **(identity or {})}
        self.progress, self.desc = progress, desc
        self.steps_per_epoch = math.ceil(data.train_size / cfg.batch_size)
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.optimizer = MaskedSGD(model.parameters(), momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                   nesterov=cfg.nesterov)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.aug_generator = torch.Generator(device=self.device).manual_seed(seed)
        self.step = 0
        self.epoch = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.images_seen = 0
        self.resumed_from: dict | None = None
        # Losses of the current epoch's steps before a signal: checkpointed with them, so a run resumed mid-epoch
        # reports the same epoch loss as an uninterrupted one.
        self.epoch_losses: list[torch.Tensor] = []
        self.stopped = False  # a callback ended the run early (kept in the checkpoint: a resume must not go on)
        self.set_masks(masks)

    # ----- masks -----------------------------------------------------------------------------------------
    def set_masks(self, masks: Mapping[str, torch.Tensor] | None) -> None:
        """Install (or replace) the masks and zero what they prune, weights and momentum alike."""
        self.masks = None
        if masks is None:
            self.optimizer.set_masks([], [])
            return
        check_masks(masks, self.model)
        params = prunable_parameters(self.model)
        self.masks = {name: masks[name].to(self.device) for name in params}
        # In the parameters' own memory layout (channels-last on CUDA), so `_foreach_mul_` stays one fused kernel.
        self.optimizer.set_masks(list(params.values()),
                                 [torch.empty_like(p).copy_(self.masks[name]) for name, p in params.items()])

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.cfg.lr * lr_factor(self.cfg, self.step, self.total_steps, self.steps_per_epoch)

    # ----- checkpoints -----------------------------------------------------------------------------------
    def _identity_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def state_dict(self) -> dict:
        state = {
            "identity": self._identity_hash(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "cpu_rng": torch.get_rng_state(),
            "aug_rng": self.aug_generator.get_state(),
            "epoch": self.epoch, "step": self.step, "stopped": self.stopped, "history": json.dumps(self.history),
            "train_seconds": self.train_seconds, "images_seen": self.images_seen,
            "checkpoint_bytes": self.checkpoint_bytes, "checkpoints_written": self.checkpoints_written,
            "masks": {k: v.cpu() for k, v in self.masks.items()} if self.masks is not None else None,
            "epoch_losses": torch.stack(self.epoch_losses).cpu() if self.epoch_losses else torch.zeros(0),
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "extra": self.extra_state(),
        }
        if self.cuda:
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def extra_state(self) -> dict:
        """What a subclass adds to the checkpoint."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def save_checkpoint(self) -> None:
        if self.checkpoint is not None:
            save_torch(self.state_dict(), self.checkpoint)
            self.checkpoint_bytes += self.checkpoint.stat().st_size
            self.checkpoints_written += 1
        self._last_write = time.monotonic()

    def _checkpoint_due(self) -> bool:
        return time.monotonic() - self._last_write >= self.checkpoint_seconds

    def try_resume(self) -> bool:
        """Resume from the checkpoint if it exists and was made by this same run; otherwise start over."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return False
        try:
            state = load_torch(self.checkpoint, what="training checkpoint")
        except InputFileError as exc:
            log.warning("starting over: %s", exc)
            return False
        if state.get("identity") != self._identity_hash():
            log.warning("starting over: checkpoint %s was made with other hyper-parameters or inputs",
                        self.checkpoint)
            return False
        try:  # first, so a checkpoint of an older format is refused before anything is taken over
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:
            log.warning("starting over: checkpoint %s holds no usable optimiser state (%s)", self.checkpoint, exc)
            return False
        self.model.load_state_dict(state["model"])
        if state["masks"] is not None:
            self.set_masks(state["masks"])
        torch.set_rng_state(state["cpu_rng"])
        self.aug_generator.set_state(state["aug_rng"])
        if self.cuda and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.epoch, self.step, self.stopped = state["epoch"], state["step"], state["stopped"]
        self.history = json.loads(state["history"])
        self.epoch_losses = list(state.get("epoch_losses", torch.zeros(0)).to(self.device).unbind())
        self.train_seconds, self.images_seen = state["train_seconds"], state["images_seen"]
        # the counts before this checkpoint was written, plus the checkpoint itself
        self.checkpoint_bytes = state.get("checkpoint_bytes", 0) + self.checkpoint.stat().st_size
        self.checkpoints_written = state.get("checkpoints_written", 0) + 1
        for callback, cb_state in zip(self.callbacks, state["callbacks"]):
            callback.load_state_dict(cb_state)
        self.load_extra_state(state.get("extra", {}))
        self.resumed_from = {"epoch": self.epoch, "step": self.step}
        log.info("resumed from %s at epoch %d, step %d", self.checkpoint, self.epoch, self.step)
        return True

    # ----- the loop --------------------------------------------------------------------------------------
    def _autocast(self):
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def evaluate(self) -> float:
        """Test accuracy in percent (a fused trainer: one per member)."""
        self.model.eval()
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for x, y in self.data.test_batches():
            with self._autocast():
                correct += (self.forward(x).argmax(1) == y).sum()
        return 100.0 * int(correct) / len(self.data.test_y)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what backward runs on, what the epoch's loss records); one and the same for a single model."""
        loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        return loss, loss

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            loss, recorded = self._loss(self.forward(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step(self.lr)
        return recorded.detach()

    def _check_losses(self, losses: list[torch.Tensor], first_step: int) -> float:
        if not losses:
            return float("nan")
        values = torch.stack(losses).float().cpu()
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            raise NonFiniteLossError(
                f"{self.desc}: loss became {values[bad[0, 0]].item()} at epoch {self.epoch + 1}, step "
                f"{first_step + int(bad[0, 0]) + 1}; no metrics were written. Lower the learning rate or check "
                "the mask and the input weights.")
        return float(values.mean())

    def fit(self) -> dict:
        """Train to the end (resuming if possible) and return the run's metrics."""
        self.try_resume()
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.desc, unit="step",
                   disable=not self.progress, dynamic_ncols=True, mininterval=2.0)
        with SignalFlag() as signals:
            while self.step < self.total_steps and not self.stopped:
                order = self.data.epoch_order(self.seed, self.epoch)
                skip = self.step - self.epoch * self.steps_per_epoch  # resumed mid-epoch
                losses, self.epoch_losses = self.epoch_losses, []  # resumed mid-epoch: the steps before the signal
                first_step = self.step - len(losses)
                start = time.perf_counter()
                self.model.train()
                for batch in range(skip, self.steps_per_epoch):
                    if self.step >= self.total_steps:
                        break
                    if signals.raised is not None:
                        self._check_losses(losses, first_step)
                        self.train_seconds += time.perf_counter() - start
                        self.epoch_losses = losses
                        self.save_checkpoint()
                        bar.close()
                        raise Preempted(f"{self.desc}: signal {signals.raised} at epoch {self.epoch + 1}, step "
                                        f"{self.step}; checkpoint written to {self.checkpoint}, rerun to resume")
                    indices = order[batch * self.cfg.batch_size:(batch + 1) * self.cfg.batch_size]
                    x, y = self.data.train_batch(indices, self.aug_generator, augment=self.cfg.augment)
                    losses.append(self._train_step(x, y))
                    self.images_seen += len(indices)
                    self.step += 1
                    for callback in self.callbacks:
                        callback.on_step_end(self, self.step)
                    bar.update(1)
                if self.cuda:
                    torch.cuda.synchronize(self.device)
                self.train_seconds += time.perf_counter() - start
                train_loss = self._check_losses(losses, first_step)
                last = self.step >= self.total_steps
                evaluate = last or (self.epoch + 1) % self.cfg.eval_every == 0
                test_acc = self.evaluate() if evaluate else None
                self.history.append({"epoch": self.epoch + 1, "step": self.step, "train_loss": train_loss,
                                     "test_acc": test_acc, "lr": self.lr})
                bar.set_postfix(self._postfix(train_loss, test_acc))
                self.epoch += 1
                for callback in self.callbacks:
                    self.stopped = callback.on_epoch_end(self, self.epoch, test_acc) or self.stopped
                if self.stopped and test_acc is None:
                    self.history[-1]["test_acc"] = self.evaluate()
                if self._checkpoint_due() or self.step >= self.total_steps or self.stopped:
                    self.save_checkpoint()  # the end's too: a crash before the caller writes its outputs costs nothing
        bar.close()
        return self.metrics()

    @staticmethod
    def _postfix(train_loss: float, test_acc: float | None) -> dict:
        return {"loss": f"{train_loss:.3f}", "acc": "-" if test_acc is None else f"{test_acc:.1f}"}

    def metrics(self) -> dict:
        evaluated = [h for h in self.history if h["test_acc"] is not None]
        best = max(evaluated, key=lambda h: h["test_acc"]) if evaluated else None
        return {
            "final_acc": evaluated[-1]["test_acc"] if evaluated else None,
            "best_acc": best["test_acc"] if best else None,
            "best_epoch": best["epoch"] if best else None,
            "epochs": self.epoch, "steps": self.step,
            "curve": self.history,
            "density": density(self.masks) if self.masks is not None else 1.0,
            "train_seconds": self.train_seconds,
            "images_per_second": self.images_seen / self.train_seconds if self.train_seconds else None,
            "checkpoint_bytes": self.checkpoint_bytes, "checkpoints_written": self.checkpoints_written,
            "device": describe_device(self.device),
            "resumed_from": self.resumed_from,
        }


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"
