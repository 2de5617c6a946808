"""PAGS / PEGS: the full-spectrum mask search (docs/design.md, "PAGS and PEGS: the mask search").

Start from the PaI mask made with full scoring data (the baseline and first best). Draw `population` candidate
masks from the same PaI method with fresh randomness (SNIP/GraSP: `batches` random, augmented mini-batches drawn
with the candidate's seed, as the authors' `--num-iteration 2` gives 4; ERK/Random: a fresh random draw;
SynFlow/Magnitude: scores of a copy of the weights with small fresh noise). A candidate's layer replaces the best's
layer when both its `delta_r_imdb` and its `l2` are at least the best's. Every `snapshot_every` candidates the
best is saved if a layer was accepted since the last snapshot. `snapshot_rule` says what counts:

- "authors" (lth_tickets_generation.py, lines 643-664 and 696-705): every layer of every candidate is compared
  with `>=`, so a candidate layer identical to the best's (a layer ERK keeps dense, a layer a global method
  prunes away entirely) is accepted too and sets the save flag: such a search saves a snapshot at every sampling
  point. An identical layer measures what the best's measures, so it is not measured again here.
- "changed" (this project's earlier rule): only layers that differ from the best's are scored, so a snapshot is
  saved only when the best changed.

Every saved snapshot is selected for training (the authors' `--cap` is infinite);
`train_cap` keeps only the newest ones for users on a budget. PAGS runs from the initialisation (@0), PEGS from
pretrained weights (@N).

The search is resumable: given a work directory, its state is saved (atomically) at every snapshot and on
SIGTERM/SIGUSR1, each snapshot in a file of its own (the state stays small however many there are), and since
candidate `i` depends only on `(seed, i)` a resumed search ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
from torch import nn
from tqdm import tqdm

from . import graph
from .data import DeviceData
from .io import InputFileError
from .torch_io import fingerprint, load_torch, save_torch
from .masks import Masks, check_masks, density as mask_density, prunable_parameters, weight_groups
from .methods import NOISY_METHODS
from .pruning import make_mask, trim_or_top_up
from .errors import Preempted
from .train import SignalFlag

log = logging.getLogger(__name__)

SEARCH_KEYS = ("delta_r_imdb", "l2")  # a layer is accepted when both are >= the best's
SNAPSHOT_RULES = ("authors", "changed")  # what sets the save flag: see the module docstring
LOGGED_KEYS = ("delta_r_imdb", "lambda_imdb", "l2")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    population: int
    batches: int = 4  # scoring mini-batches per SNIP/GraSP candidate
    batch_size: int = 128
    augment: bool = True  # crop + flip the candidates' scoring batches, as the authors' training loader does
    snapshot_every: int = 10
    train_cap: int | None = None  # None: every snapshot is selected; else only the newest `train_cap`
    noise: float = 0.01
    snapshot_rule: str = "authors"  # "authors": identical layers count as accepted; "changed": only changed ones

    def __post_init__(self) -> None:
        if (self.population < 0 or self.batches < 1 or self.snapshot_every < 1
                or (self.train_cap is not None and self.train_cap < 1) or self.snapshot_rule not in SNAPSHOT_RULES):
            raise ValueError(f"invalid search settings: {self}")


@dataclasses.dataclass
class Snapshot:
    """A saved best mask: held in memory, or (a search with a work directory) in a file of its own."""

    index: int  # 1-based snapshot number (0: the baseline, when the best never changed)
    after_candidates: int
    density: float
    masks: Masks | None = None
    path: Path | None = None

    def load(self) -> Masks:
        if self.masks is not None:
            return self.masks
        return load_torch(self.path, what="search snapshot")["masks"]


@dataclasses.dataclass
class SearchResult:
    baseline: Masks
    selected: list[Snapshot]  # oldest first; [baseline as snapshot 0] when the best never changed
    log: list[dict]  # one row per candidate and layer
    summary: dict


def candidate_seed(seed: int, index: int) -> int:
    """The seed of candidate `index` (1-based): distinct per (search seed, candidate), stable across resumes."""
    return (seed + 1) * 1_000_003 + index


def draw_candidate(model: nn.Module, method: str, density: float, data: DeviceData, cfg: SearchConfig,
                   seed: int) -> Masks:
    """One candidate mask of `method`, from randomness fixed by `seed`."""
    batches = data.method_batches(method, cfg.batches, cfg.batch_size, seed=seed, augment=cfg.augment)
    noise = cfg.noise if method in NOISY_METHODS else 0.0
    return make_mask(model, method, density, batches=batches, seed=seed, noise=noise)


def control_masks(model: nn.Module, method: str, density: float, data: DeviceData, cfg: SearchConfig, seed: int,
                  count: int) -> Iterator[Masks]:
    """The no-criterion control of a search: its first `count` candidates as whole masks, i.e. draws from the same
    PaI method with the same fresh randomness, never filtered by the graph metrics. Trained beside the selected
    snapshots (count = how many were selected), they tell "best of K trainings" apart from "better masks".
    Drawn one at a time, so a caller that saves each never holds hundreds of masks at once."""
    for index in range(1, count + 1):
        yield draw_candidate(model, method, density, data, cfg, candidate_seed(seed, index))


def equal_density(selection: Masks, baseline: Masks,
                  baseline_scores: Callable[[], Mapping[str, torch.Tensor]]) -> Masks | None:
    """The selection trimmed or topped up to the baseline's weight count by the baseline method's own scores
    (`baseline_scores()`, called only when needed), or None when it keeps that many already. ERK and Random
    selections always do: every candidate keeps each layer's count, so mixing layers cannot move the total."""
    count = sum(int(m.sum()) for m in baseline.values())
    if sum(int(m.sum()) for m in selection.values()) == count:
        return None
    return trim_or_top_up(selection, baseline_scores(), count)


def measure(params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], names,
            groups: Mapping[str, int]) -> dict[str, dict]:
    """The search's metrics of the named layers (`groups`: masks.weight_groups), eigenproblems solved together."""
    records = graph.measure_layers({name: (params[name].detach(), masks[name], groups[name]) for name in names})
    return {name: {key: float(records[name][key]) for key in LOGGED_KEYS} for name in names}


class _State:
    """Everything a search needs to continue: the best mask and its metrics, snapshots, log, explored weights."""

    def __init__(self, baseline: Masks, metrics: dict[str, dict]) -> None:
        self.best = {k: v.clone() for k, v in baseline.items()}
        self.best_metrics = metrics
        self.explored = {k: v.clone() for k, v in baseline.items()}
        self.done = 0
        self.accepted = 0
        self.identical = 0  # accepted layers identical to the best's (snapshot_rule "authors")
        self.save_flag = False  # a layer was accepted since the last snapshot
        self.snapshot_count = 0
        self.snapshots: list[Snapshot] = []  # only the newest `train_cap` when capped: older ones are never selected
        self.log: list[dict] = []
        self.seconds = {"scoring": 0.0, "other": 0.0}

    def to_dict(self, fingerprint: str) -> dict:
        cpu = lambda masks: {k: v.cpu() for k, v in masks.items()}  # noqa: E731
        return {"fingerprint": fingerprint, "best": cpu(self.best), "explored": cpu(self.explored),
                "best_metrics": json.dumps(self.best_metrics), "done": self.done, "accepted": self.accepted,
                "identical": self.identical, "save_flag": self.save_flag, "snapshot_count": self.snapshot_count,
                "log": json.dumps(self.log),
                "seconds": json.dumps(self.seconds),
                "snapshots": [{"index": s.index, "after": s.after_candidates, "density": s.density,
                               "path": str(s.path)} for s in self.snapshots]}

    def load(self, saved: dict, device: torch.device) -> None:
        on = lambda masks: {k: v.to(device) for k, v in masks.items()}  # noqa: E731
        snapshots = [Snapshot(s["index"], s["after"], s["density"], path=Path(s["path"]))
                     for s in saved["snapshots"]]
        missing = [str(s.path) for s in snapshots if not s.path.exists()]
        if missing:  # checked before anything is taken over: a refused state leaves this one untouched
            raise InputFileError(f"search snapshot(s) {', '.join(missing)} of the saved state are missing")
        self.best, self.explored = on(saved["best"]), on(saved["explored"])
        self.best_metrics = json.loads(saved["best_metrics"])
        self.done, self.accepted, self.identical = saved["done"], saved["accepted"], saved["identical"]
        self.save_flag = saved["save_flag"]
        self.snapshot_count = saved["snapshot_count"]
        self.log, self.seconds = json.loads(saved["log"]), json.loads(saved["seconds"])
        self.snapshots = snapshots


def accept_layers(best: Masks, best_metrics: dict, candidate: Masks, cand_metrics: dict) -> list[str]:
    """Apply the layer-wise greedy rule in place; return the names of the accepted layers."""
    accepted = []
    for name, metrics in cand_metrics.items():
        if all(metrics[key] >= best_metrics[name][key] for key in SEARCH_KEYS):
            best[name] = candidate[name].clone()
            best_metrics[name] = metrics
            accepted.append(name)
    return accepted


def pags(model: nn.Module, method: str, density: float, data: DeviceData, cfg: SearchConfig, seed: int, *,
         baseline: Masks | None = None, scoring_batches: int | str = "all", workdir: str | Path | None = None,
         progress: bool = True) -> SearchResult:
    """Run the search on `model`'s current weights (the initialisation for PAGS, pretrained ones for PEGS).

    `baseline` is the PaI mask made with full scoring data (computed here from `scoring_batches` augmented batches
    drawn with `seed` when not given, "all" = the whole training set: the same draw the pai_mask step makes).
    `workdir` (optional) keeps the resumable state and the snapshots' files; without it snapshots stay in memory.
    """
    params = prunable_parameters(model)
    device = next(iter(params.values())).device
    if baseline is None:
        batches = data.method_batches(method, scoring_batches, cfg.batch_size, seed=seed, augment=cfg.augment)
        baseline = make_mask(model, method, density, batches=batches, seed=seed)
    check_masks(baseline, model, source="search baseline")
    baseline = {k: v.to(device) for k, v in baseline.items()}
    fingerprint = _fingerprint(model, method, density, cfg, seed, baseline, data)

    groups = weight_groups(model)
    baseline_metrics = measure(params, baseline, params, groups)
    state = _State(baseline, {name: dict(m) for name, m in baseline_metrics.items()})
    workdir = Path(workdir) if workdir else None
    state_path = workdir / "state.pt" if workdir else None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    if state_path is not None and state_path.exists():
        try:
            saved = load_torch(state_path, what="search state")
            if saved.get("fingerprint") == fingerprint:
                state.load(saved, device)
                log.info("resumed the search after candidate %d of %d", state.done, cfg.population)
            else:
                log.warning("starting over: %s was saved by a search with other inputs or settings", state_path)
        except InputFileError as exc:
            log.warning("starting over: %s", exc)
    resumed_at = state.done

    bar = tqdm(total=cfg.population, initial=state.done, desc=f"search {method}", unit="cand",
               disable=not progress, dynamic_ncols=True, mininterval=1.0)
    with SignalFlag() as signals:
        while state.done < cfg.population:
            if signals.raised is not None:
                _save(state, state_path, fingerprint)
                bar.close()
                raise Preempted(f"search: signal {signals.raised} after candidate {state.done}; state saved to "
                                f"{state_path}, rerun to resume")
            index = state.done + 1
            cand_seed = candidate_seed(seed, index)
            started = time.perf_counter()
            candidate = draw_candidate(model, method, density, data, cfg, cand_seed)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            scored = time.perf_counter()
            identical = [name for name in params if torch.equal(candidate[name], state.best[name])]
            changed = [name for name in params if name not in identical]
            cand_metrics = measure(params, candidate, changed, groups)
            accepted = accept_layers(state.best, state.best_metrics, candidate, cand_metrics)
            if cfg.snapshot_rule == "authors":  # their `>=` holds for a layer equal to the best's: accepted, no-op
                accepted += identical
                state.identical += len(identical)
            for name in params:
                state.explored[name] |= candidate[name]
                row = {"candidate": index, "seed": cand_seed, "layer": name,
                       **cand_metrics.get(name, state.best_metrics[name]), "accepted": name in accepted,
                       "identical": name in identical}
                state.log.append(row)
            state.done, state.accepted = index, state.accepted + len(accepted)
            state.save_flag |= bool(accepted)
            if index % cfg.snapshot_every == 0:
                dropped = []
                if state.save_flag:
                    state.snapshot_count += 1
                    state.snapshots.append(_snapshot(state, index, workdir))
                    if cfg.train_cap is not None:
                        dropped = state.snapshots[:-cfg.train_cap]
                        state.snapshots = state.snapshots[-cfg.train_cap:]
                    state.save_flag = False
                state.seconds["other"] += time.perf_counter() - scored
                _save(state, state_path, fingerprint)
                for old in dropped:  # only once the saved state no longer names them
                    if old.path is not None:
                        old.path.unlink(missing_ok=True)
            else:
                state.seconds["other"] += time.perf_counter() - scored
            state.seconds["scoring"] += scored - started
            bar.update(1)
            bar.set_postfix(accepted=state.accepted, l2=f"{_mean(state.best_metrics, 'l2'):.3f}")
    bar.close()

    selected = state.snapshots or [Snapshot(0, 0, mask_density(baseline), masks=baseline)]
    summary = _summary(state, baseline, baseline_metrics, selected, density, cfg, resumed_at)
    return SearchResult(baseline=baseline, selected=selected, log=state.log, summary=summary)


def _snapshot(state: _State, after: int, workdir: Path | None) -> Snapshot:
    """The current best as snapshot number `state.snapshot_count`, written to its own file under `workdir`."""
    masks = {k: v.clone() for k, v in state.best.items()}
    snapshot = Snapshot(state.snapshot_count, after, mask_density(masks))
    if workdir is None:
        snapshot.masks = masks
    else:
        snapshot.path = workdir / f"snapshot{state.snapshot_count}.pt"
        save_torch({"masks": {k: v.cpu() for k, v in masks.items()}}, snapshot.path)
    return snapshot


def _save(state: _State, path: Path | None, fingerprint: str) -> None:
    if path is not None:
        save_torch(state.to_dict(fingerprint), path)


def _mean(metrics: dict[str, dict], key: str) -> float:
    return sum(m[key] for m in metrics.values()) / len(metrics)


def _fingerprint(model, method, density, cfg, seed, baseline, data: DeviceData) -> str:
    """What makes a saved state this search's: settings, data, device, and the weights and baseline searched."""
    settings = [method, density, dataclasses.asdict(cfg), seed, data.path, data.train_size, data.device.type,
                fingerprint(prunable_parameters(model)), fingerprint(baseline)]
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]


def _summary(state: _State, baseline: Masks, baseline_metrics: dict, selected: list[Snapshot], target: float,
             cfg: SearchConfig, resumed_at: int) -> dict:
    total = sum(m.numel() for m in baseline.values())
    explored = sum(int(m.sum()) for m in state.explored.values())
    per_candidate = {k: v / state.done if state.done else 0.0 for k, v in state.seconds.items()}
    return {
        "population": cfg.population, "candidates_done": state.done, "resumed_at_candidate": resumed_at,
        "layers_accepted": state.accepted, "layers_accepted_identical": state.identical,
        "snapshot_rule": cfg.snapshot_rule, "snapshots": state.snapshot_count,
        "explored_share": explored / total,
        "baseline_density": mask_density(baseline),
        "baseline_mean": {key: _mean(baseline_metrics, key) for key in LOGGED_KEYS},
        "best_mean": {key: _mean(state.best_metrics, key) for key in LOGGED_KEYS},
        "seconds_per_candidate": per_candidate,
        "selected": [{"snapshot": s.index, "after_candidates": s.after_candidates,
                      "density": s.density, "density_drift": s.density - target} for s in selected],
        "best_layer_metrics": state.best_metrics,
    }
