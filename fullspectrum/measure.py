"""Graph metrics of any PyTorch model's mask, for `fullspectrum metrics` (fullspectrum/__main__.py).

Researchers measure their own masks without the workflow, so the inputs are what they already have:

- a model: `torchvision:NAME` (any torchvision classification model, built with `weights=None`: nothing is
  downloaded) or one of this project's CIFAR ResNets;
- weights (optional, else the initialisation drawn with `seed`): a plain state dict or this project's weights
  file. A state dict of a model pruned with torch.nn.utils.prune (`<name>_orig` and `<name>_mask` entries)
  carries its mask too;
- a mask: a plain `{weight name: bool tensor}` dict (a torch.nn.utils.prune `<name>_mask` name or a 0/1 tensor
  is accepted too) or this project's mask file, naming every prunable weight of the model
  (fullspectrum.masks); or the masks torch.nn.utils.prune holds in the model, the weights it left unpruned
  counting as dense.

Every file is read with `torch.load(weights_only=True)`. Input that does not fit raises a ValueError naming the
file and the first mismatch.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping

import pandas as pd
import torch
import torchvision
from torch import nn

from . import graph, models
from .io import InputFileError, read_csv, write_csv
from .torch_io import load_torch
from .masks import Masks, check_masks, prunable_parameters, weight_groups

TORCHVISION = "torchvision:"
# The table's columns: the per-layer values first, then how the graph was read.
TABLE_COLUMNS = ("layer", "shape", "density", "delta_r", "lambda_gap", "delta_r_imdb", "lambda_imdb", "l2",
                 "undefined", "groups", "n_out", "n_in", "dbar_out", "dbar_in")


def build_model(spec: str, num_classes: int | None = None, width: int | None = None, seed: int = 0) -> nn.Module:
    """`torchvision:NAME` or a project model ("resnet18", "resnet34"), initialised from `seed` on the CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.startswith(TORCHVISION):
            name = spec[len(TORCHVISION):]
            available = torchvision.models.list_models(module=torchvision.models)
            if name not in available:
                raise ValueError(f"{name!r} is not a torchvision classification model; it has "
                                 f"{len(available)}, e.g. resnet50, vit_b_16, mobilenet_v3_small")
            if width is not None:
                raise ValueError("--width applies to this project's models only")
            extra = {} if num_classes is None else {"num_classes": num_classes}
            return torchvision.models.get_model(name, weights=None, **extra)
        if spec not in models.ARCHITECTURES:
            raise ValueError(f"unknown model {spec!r}: expected torchvision:NAME or one of "
                             f"{', '.join(sorted(models.ARCHITECTURES))}")
        return models.build(spec, 10 if num_classes is None else num_classes, 64 if width is None else width)


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict of a weights file and its meta ({} for a plain state dict)."""
    payload = load_torch(path, what="weights file")
    meta = {}
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict) and "meta" in payload:
        payload, meta = payload["state_dict"], payload["meta"]  # this project's weights file
    if not isinstance(payload, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in payload.items()):
        raise InputFileError(f"weights file {path} is not a state dict (a dict of tensors) nor this project's "
                             "weights file")
    return payload, meta


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> Masks:
    """Load `state` into `model` (strictly, first mismatch named); return the torch.nn.utils.prune masks it held.

    A pruned weight is saved as `<name>_orig` (the weight) and `<name>_mask` (its mask); the model gets the
    weight under its own name.
    """
    state, masks = dict(state), {}
    for name in prunable_parameters(model):
        if f"{name}_orig" in state and f"{name}_mask" in state:
            state[name] = state.pop(f"{name}_orig")
            masks[name] = _as_mask(state.pop(f"{name}_mask"), f"{source}: {name}_mask")
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    for name, shape in expected.items():
        if name not in state:
            raise ValueError(f"{source}: no entry for {name!r} of the model (was it saved from another model?)")
        if tuple(state[name].shape) != shape:
            raise ValueError(f"{source}: {name!r} has shape {tuple(state[name].shape)} but the model's has {shape}")
    extra = [name for name in state if name not in expected]
    if extra:
        raise ValueError(f"{source}: {extra[0]!r} is not in the model")
    model.load_state_dict(state)
    return masks


def _as_mask(value: Any, what: str) -> torch.Tensor:
    """A bool tensor from a bool or 0/1 tensor (torch.nn.utils.prune keeps float masks)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{what} is a {type(value).__name__}, not a tensor")
    if value.dtype != torch.bool:
        if value.is_complex() or not bool(((value == 0) | (value == 1)).all()):
            raise ValueError(f"{what} is not a mask: expected a bool tensor or one of zeros and ones")
        value = value != 0
    return value


def read_masks(path: str | os.PathLike, model: nn.Module) -> Masks:
    """A mask file (plain dict or this project's format) checked against every prunable weight of `model`."""
    payload = load_torch(path, what="mask file")
    if isinstance(payload, dict) and isinstance(payload.get("masks"), dict) and "meta" in payload:
        payload = payload["masks"]
    if not isinstance(payload, dict) or not payload or not all(isinstance(name, str) for name in payload):
        raise InputFileError(f"mask file {path} holds no {{weight name: bool tensor}} dict")
    params = prunable_parameters(model)
    masks = {}
    for name, value in payload.items():
        if name not in params and name.endswith("_mask") and name[: -len("_mask")] in params:
            name = name[: -len("_mask")]  # a torch.nn.utils.prune buffer name
        masks[name] = _as_mask(value, f"mask file {path}: {name!r}")
    check_masks(masks, model, source=f"mask file {path}")
    return masks


def with_dense(masks: Masks, model: nn.Module) -> tuple[Masks, list[str]]:
    """`masks` completed with dense masks for the prunable weights they leave out, and the names of those."""
    params = prunable_parameters(model)
    missing = [name for name in params if name not in masks]
    full = {name: masks[name] if name in masks else torch.ones_like(param, dtype=torch.bool)
            for name, param in params.items()}
    return full, missing


def metrics_table(model: nn.Module, masks: Masks, progress: Callable[[int], Any] | None = None) -> pd.DataFrame:
    """fullspectrum.graph.model_metrics in the columns `TABLE_COLUMNS`: what is undefined, spelled out, and
    each layer's convolution groups (the grouped-convolution graph of graph.py)."""
    table = graph.model_metrics(model, masks, progress=progress)
    groups = weight_groups(model)
    table["groups"] = pd.array([groups.get(name) for name in table["layer"]], dtype="Int64")
    table["undefined"] = [" ".join(key for key in graph.METRICS if math.isnan(row[key]))
                          for _, row in table.iterrows()]
    return table[list(TABLE_COLUMNS)]


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    write_csv(table, path)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A table written by `write_table`, with the same dtypes (integers nullable, "undefined" a string)."""
    table = read_csv(path, TABLE_COLUMNS, what="metrics table", float_precision="round_trip")
    table = table.astype({"n_out": "Int64", "n_in": "Int64", "groups": "Int64"})
    for column in ("shape", "undefined"):
        table[column] = table[column].fillna("").astype(str)
    return table[list(TABLE_COLUMNS)]
