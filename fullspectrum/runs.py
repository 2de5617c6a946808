"""Recipes the workflow steps call: dense pretraining and training a mask from given weights."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .data import DeviceData
from .graph import model_metrics
from .io import write_csv, write_json
from .masks import load_mask_file
from .models import build_seeded, load_weights, save_weights
from .provenance import provenance
from .train import Trainer, TrainConfig, describe_device


def pretrain(*, model: str, width: int, dataset: str, data: DeviceData, iters: int, seed: int, cfg: TrainConfig,
             out: str | Path, init: str = "authors", outputs: int | None = None, head_bias: bool = True,
             progress: bool = True) -> dict:
    """Dense SGD from the seed's initialisation (`init`, see models.INITS) for `iters` iterations (0 = the
    initialisation itself). The classifier has `outputs` outputs (default: one per class of `data`; never fewer)
    and a bias when `head_bias`.

    The learning rate is constant: a few hundred iterations are a fraction of any schedule's first epoch.
    """
    started = time.perf_counter()
    outputs = data.num_classes if outputs is None else outputs
    if outputs < data.num_classes:
        raise ValueError(f"a classifier of {outputs} outputs cannot predict the {data.num_classes} classes of {dataset}")
    net = build_seeded(model, outputs, width, seed, init=init, head_bias=head_bias)
    metrics = {"steps": 0}
    if iters > 0:
        trainer = Trainer(net, data, dataclasses.replace(cfg, max_steps=iters, schedule="constant"),
                          seed=seed, checkpoint=Path(out).with_suffix(".state.pt"),
                          identity={"model": model, "width": width, "dataset": dataset, "iters": iters,
                                    "init": init, "outputs": outputs, "head_bias": head_bias},
                          progress=progress, desc=f"pretrain {model}@{iters}")
        metrics = trainer.fit()
        net = trainer.model.cpu()
    meta = {"model": model, "num_classes": outputs, "classes": data.num_classes, "head_bias": head_bias,
            "width": width, "dataset": dataset, "seed": seed, "iters": iters, "init": init, "pretrain_metrics": metrics,
            "provenance": provenance(device=describe_device(data.device),
                                     wall_seconds=time.perf_counter() - started)}
    save_weights(out, net, meta)
    Path(out).with_suffix(".state.pt").unlink(missing_ok=True)
    return meta


def train_mask(*, weights: str | Path, mask: str | Path, data: DeviceData, cfg: TrainConfig, seed: int,
               out: str | Path, config_used: dict | None = None, progress: bool = True,
               desc: str | None = None) -> dict:
    """Train the mask in `mask` from the weights in `weights`; write metrics.json (final- and best-epoch accuracy)."""
    started = time.perf_counter()
    net, weights_meta = load_weights(weights)
    masks, mask_meta = load_mask_file(mask, net)  # refuses a mask that does not fit, before any training
    checkpoint = Path(out).with_name(".train_state.pt")
    trainer = Trainer(net, data, cfg, seed=seed, masks=masks, checkpoint=checkpoint,
                      identity={"weights": str(weights), "mask": str(mask), "mask_meta": repr(mask_meta)},
                      progress=progress, desc=desc or f"train {Path(mask).parent}")
    metrics = trainer.fit()
    record = mask_record(metrics, weights=weights, mask=mask, weights_meta=weights_meta, mask_meta=mask_meta,
                         config_used=config_used, wall_seconds=time.perf_counter() - started)
    write_json(record, out)
    checkpoint.unlink(missing_ok=True)
    return record


def mask_record(metrics: dict, *, weights: str | Path, mask: str | Path, weights_meta: dict, mask_meta: dict,
                config_used: dict | None, wall_seconds: float) -> dict:
    """A trained mask's metrics.json: the trainer's metrics, what was trained, and provenance."""
    return {**metrics,
            "mask": str(mask), "weights": str(weights), "method": mask_meta.get("method"),
            "target_density": mask_meta.get("target_density"), "mask_meta": _plain(mask_meta),
            "weights_iters": weights_meta.get("iters"),
            "provenance": provenance(config=config_used, device=metrics["device"], wall_seconds=wall_seconds)}


def _plain(meta: dict) -> dict:
    """The JSON-friendly part of a mask's meta (per-layer densities are kept; tensors are not)."""
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}


def graph_metrics(*, weights: str | Path, mask: str | Path, out: str | Path) -> str:
    """Write the per-layer graph metrics of `mask` on the weights it was made from; return a one-line summary.

    Run inside the job that made or trains the mask (seconds, on the CPU), so a cluster run has no separate tiny
    job per mask.
    """
    started = time.perf_counter()
    net, _ = load_weights(weights)
    masks, _ = load_mask_file(mask, net)
    table = model_metrics(net, masks)
    write_csv(table, out)
    mean = table.iloc[-1]
    return (f"graph metrics of {len(table) - 1} layers at density {mean['density']:.5f}: delta_r_imdb "
            f"{mean['delta_r_imdb']:.4f}, lambda_imdb {mean['lambda_imdb']:.4f}, l2 {mean['l2']:.4f} -> {out} "
            f"in {time.perf_counter() - started:.1f} s")
