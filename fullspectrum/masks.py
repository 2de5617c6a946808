"""Prunable weights, the mask file format every stage shares, and mask arithmetic.

A mask is a dict `{parameter name: bool tensor}` covering every weight that carries a layer graph (docs/design.md,
"Layer graph"): Conv1d/2d/3d (grouped ones included), Linear, and nn.MultiheadAttention's input projection
(`in_proj_weight`, or `q/k/v_proj_weight` when keys and values have their own sizes; its output projection is a
Linear). Biases, normalisation layers and embeddings are never pruned. For the CIFAR ResNets these are their
Conv2d and Linear weights.

A mask file is `torch.save({"masks": masks, "meta": {...}})`, the meta recording at least method, target and
achieved density, per-layer densities, seed, model, dataset and source checkpoint.
"""

from __future__ import annotations

import os
from typing import Iterator, Mapping

import torch
from torch import nn

from .io import InputFileError
from .torch_io import load_torch, save_torch

Masks = dict[str, torch.Tensor]

REQUIRED_META = ("method", "target_density", "density", "layer_density", "seed", "model", "dataset", "source")


_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _weight_attributes(module: nn.Module) -> tuple[str, ...]:
    """The names of a module's own weights that carry a layer graph (none for other modules)."""
    if isinstance(module, _CONVOLUTIONS + (nn.Linear,)):
        return ("weight",)
    if isinstance(module, nn.MultiheadAttention):
        return ("in_proj_weight",) if module._qkv_same_embed_dim else ("q_proj_weight", "k_proj_weight",
                                                                       "v_proj_weight")
    return ()


def _prunable(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """(weight name, module, attribute) of every prunable weight, in model order."""
    for module_name, module in model.named_modules():
        for attribute in _weight_attributes(module):
            yield f"{module_name}.{attribute}" if module_name else attribute, module, attribute


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every weight that carries a layer graph, keyed by its `named_parameters()` name, in model order.

    A weight pruned with torch.nn.utils.prune is its `<name>_orig` parameter, still keyed by the weight's name.
    """
    return {name: getattr(module, f"{attribute}_orig", getattr(module, attribute))
            for name, module, attribute in _prunable(model)}


def weight_groups(model: nn.Module) -> dict[str, int]:
    """The number of groups of every prunable weight (a convolution's `groups`, else 1): its graph needs it."""
    return {name: module.groups if isinstance(module, _CONVOLUTIONS) else 1
            for name, module, _ in _prunable(model)}


def pruned_masks(model: nn.Module) -> Masks:
    """The masks torch.nn.utils.prune holds in a model (its `<name>_mask` buffers), as bool tensors."""
    return {name: getattr(module, f"{attribute}_mask").detach().bool()
            for name, module, attribute in _prunable(model) if hasattr(module, f"{attribute}_mask")}


def density(masks: Mapping[str, torch.Tensor]) -> float:
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return kept / total


def layer_densities(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(m.float().mean()) for name, m in masks.items()}


def dense_masks(model: nn.Module) -> Masks:
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in prunable_parameters(model).items()}


def check_masks(masks: Mapping[str, torch.Tensor], model: nn.Module, source: str = "mask") -> None:
    """Raise a ValueError naming the first layer where `masks` does not fit `model`."""
    params = prunable_parameters(model)
    for name, param in params.items():
        if name not in masks:
            raise ValueError(f"{source}: no mask for prunable weight {name!r} of the model")
        mask = masks[name]
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError(f"{source}: mask {name!r} must be a bool tensor, got "
                             f"{getattr(mask, 'dtype', type(mask).__name__)}")
        if tuple(mask.shape) != tuple(param.shape):
            raise ValueError(f"{source}: mask {name!r} has shape {tuple(mask.shape)} but the model's weight has "
                             f"{tuple(param.shape)} (was it made for another model or width?)")
    extra = sorted(set(masks) - set(params))
    if extra:
        raise ValueError(f"{source}: mask names a weight the model does not have: {extra[0]!r}")


def empty_layers(masks: Mapping[str, torch.Tensor]) -> list[str]:
    """Layers with no weight left: a collapsed layer disconnects the network."""
    return [name for name, m in masks.items() if not bool(m.any())]


def build_meta(masks: Mapping[str, torch.Tensor], **fields) -> dict:
    """Meta with the achieved densities computed from the masks themselves."""
    meta = dict(fields)
    meta["density"] = density(masks)
    meta["layer_density"] = layer_densities(masks)
    meta["empty_layers"] = empty_layers(masks)
    return meta


def save_mask_file(path: str | os.PathLike, masks: Mapping[str, torch.Tensor], meta: Mapping) -> None:
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise ValueError(f"mask meta for {path} lacks {missing}")
    save_torch({"masks": {k: v.detach().to("cpu", torch.bool) for k, v in masks.items()}, "meta": dict(meta)}, path)


def load_mask_file(path: str | os.PathLike, model: nn.Module | None = None) -> tuple[Masks, dict]:
    """Load and validate a mask file; with `model`, also check every name and shape against it."""
    payload = load_torch(path, what="mask file")
    if not isinstance(payload, dict) or "masks" not in payload or "meta" not in payload:
        raise InputFileError(f"mask file {path} is not a mask file (expected a dict with 'masks' and 'meta')")
    masks, meta = payload["masks"], payload["meta"]
    if model is not None:
        try:
            check_masks(masks, model, source=f"mask file {path}")
        except ValueError as exc:
            raise InputFileError(str(exc)) from exc
    return masks, meta


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place."""
    for name, param in prunable_parameters(model).items():
        param.mul_(masks[name].to(param.device, param.dtype))
