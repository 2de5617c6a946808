"""Pruning-at-initialisation (PaI) masks: SNIP, GraSP, SynFlow, ERK, Random and Magnitude.

Every method returns a mask `{parameter name: bool tensor}` over the prunable weights of
`masks.prunable_parameters(model)` (every Conv1d/2d/3d, Linear and attention-projection weight).

- Global methods (snip, grasp, synflow, magnitude) rank one score per weight over all prunable layers together
  and keep exactly `round(density * N)` weights (N = number of prunable weights) with one global threshold.
  Ties at the threshold are broken deterministically: among equal scores the weight that comes first in the
  concatenation of the layers (model order, then row-major inside a layer) is kept first.
- Layer-wise random methods (erk, random) keep exactly `round(d_l * N_l)` weights in layer l, drawn uniformly.

Scoring always runs on a deep copy of the model in `eval()` mode, on the model's device, so the caller's
weights, BatchNorm statistics, gradients and train/eval flag are untouched, and the global RNG is not consumed:
all randomness comes from generators seeded with `seed` (drawn on the CPU so that the same seed gives the same
mask on every device).

Method definitions (docs/design.md, "PaI methods"):

- snip: `|g * w|`, `g` the gradient of the summed per-batch mean cross-entropy over the scoring batches (the
  gradients of the batches are summed before the absolute value, as in Synaptic-Flow's SNIP).
- grasp: `w * (H g)` with temperature 200: `g` is the gradient of `CE(logits / 200)` summed over the batches
  (detached), `H g` the sum over batches of the Hessian (restricted to the prunable weights) times `g`,
  obtained by double backward of `z = sum(g_detached * grad_with_graph)`. The highest scores are kept, i.e. the
  largest `-w * (H g)` are removed, the original GraSP rule.
- synflow: 100 rounds; in round t (1..T) the mask keeps `round(density ** (t / T) * N)` weights. The scoring
  copy is converted to float64, every floating parameter and buffer (BatchNorm running statistics included) is
  replaced by its absolute value, BatchNorm runs in eval mode, the input is all ones of shape `[1, 3, 32, 32]`
  (or `[1, *x.shape[1:]]` of the first batch when batches are given), and the score is
  `|w * d sum(output) / d w|` of the currently masked network. A weight pruned in an earlier round is never
  revived (its score is treated as minus infinity).
- magnitude: `|w|`, global.
- erk: Erdős–Rényi-Kernel layer densities (`erk_layer_densities`), then a uniformly random mask per layer.
- random: every layer keeps `round(density * N_l)` uniformly random weights.

`noise` (for the mask search, where SynFlow candidates score "a copy of the weights with small fresh noise"):
before scoring, every prunable weight `w` of the scoring copy gets `noise * std(|w|) * eps`, with `std(|w|)`
the standard deviation of the layer's absolute weights and `eps` standard Gaussian noise from a generator seeded
with `seed`. It applies to the score-based methods (snip, grasp, synflow, magnitude) and is ignored by erk and
random, whose masks are already random.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Iterable, Mapping

import torch
from torch import nn
import torch.nn.functional as F

from .masks import Masks, empty_layers, prunable_parameters
from .methods import DATA_METHODS, GLOBAL_METHODS, METHODS  # noqa: F401 (METHODS is part of this module's API)

log = logging.getLogger(__name__)

SCORE_METHODS = GLOBAL_METHODS  # methods with a per-weight score (`scores`)
GRASP_TEMPERATURE = 200.0
SYNFLOW_ROUNDS = 100
DEFAULT_INPUT_SHAPE = (3, 32, 32)

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------------------------- validation


def _check_noise(noise: float) -> float:
    try:
        value = float(noise)
    except (TypeError, ValueError):
        raise ValueError(f"noise must be a number, got {noise!r}") from None
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    return value


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; expected one of {', '.join(METHODS)}")


def _check_density(density: float, *, closed: bool = False) -> float:
    try:
        value = float(density)
    except (TypeError, ValueError):
        raise ValueError(f"density must be a number, got {density!r}") from None
    ok = (0.0 <= value <= 1.0) if closed else (0.0 < value < 1.0)
    if not ok or math.isnan(value):
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"density must lie in {interval}, got {density!r}")
    return value


def _materialise_batches(batches: Batches | None, method: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if batches is None:
        raise ValueError(f"method {method!r} is data-driven and needs scoring batches (a list of (x, y)); got none")
    batches = list(batches)
    if not batches:
        raise ValueError(f"method {method!r} is data-driven and needs scoring batches; got an empty iterable")
    for index, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"scoring batch {index} must be an (x, y) pair, got {type(batch).__name__}")
    return batches


# ------------------------------------------------------------------------------------------ global threshold


def _topk_flat(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Bool vector keeping exactly the `k` largest entries of `flat`; ties kept in index order. NaN ranks last."""
    n = flat.numel()
    keep = torch.zeros(n, dtype=torch.bool, device=flat.device)
    if k <= 0:
        return keep
    if k >= n:
        return keep.fill_(True)
    if flat.is_floating_point() and bool(torch.isnan(flat).any()):
        log.warning("%d NaN scores ranked below every other score", int(torch.isnan(flat).sum()))
        flat = torch.nan_to_num(flat, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    # The k-th largest value is the (n - k + 1)-th smallest.
    threshold = torch.kthvalue(flat, n - k + 1).values
    torch.gt(flat, threshold, out=keep)
    missing = k - int(keep.sum())
    if missing > 0:
        ties = torch.nonzero(flat == threshold).flatten()[:missing]
        keep[ties] = True
    return keep


def _split(flat: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Masks:
    out, offset = {}, 0
    for name, ref in like.items():
        n = ref.numel()
        out[name] = flat[offset:offset + n].view(ref.shape).clone()  # own storage: saving one layer saves it only
        offset += n
    return out


def global_topk_mask(scores: Mapping[str, torch.Tensor], density: float | None = None, *,
                     k: int | None = None) -> Masks:
    """Keep the globally highest scores: exactly `round(density * N)` weights (or exactly `k` when given).

    One threshold over the concatenation of all layers (in the mapping's order); among equal scores the earlier
    weight in that concatenation is kept first, so the result is deterministic. NaN scores rank below everything.
    Masks to exclude (e.g. already pruned weights) can be given a score of `-inf`.
    """
    if not scores:
        raise ValueError("global_topk_mask needs at least one score tensor")
    total = sum(s.numel() for s in scores.values())
    if (density is None) == (k is None):
        raise ValueError("give exactly one of density and k")
    if k is None:
        k = int(round(_check_density(density, closed=True) * total))
    elif not 0 <= int(k) <= total:
        raise ValueError(f"k must lie in [0, {total}], got {k}")
    first = next(iter(scores.values()))
    dtype = torch.float64 if any(s.is_floating_point() for s in scores.values()) else first.dtype
    flat = torch.cat([s.detach().reshape(-1).to(first.device, dtype) for s in scores.values()])
    return _split(_topk_flat(flat, int(k)), scores)


def trim_or_top_up(masks: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor], count: int) -> Masks:
    """`masks` changed to keep exactly `count` weights: its lowest-scored kept weights dropped, or the
    highest-scored pruned ones added, over all layers together (ties in model order, as in global_topk_mask).

    A PAGS/PEGS selection mixes layers of candidates whose global thresholds differ, so its weight count drifts
    from the target; this puts it back at the baseline's count for a comparison at equal density.
    """
    flat = torch.cat([m.reshape(-1) for m in masks.values()])
    flat_scores = torch.cat([scores[name].detach().reshape(-1).to(flat.device, torch.float64) for name in masks])
    if not 0 <= count <= flat.numel():
        raise ValueError(f"count must lie in [0, {flat.numel()}], got {count}")
    kept = int(flat.sum())
    out = flat.clone()
    if kept > count:
        index = flat.nonzero().flatten()
        out[index] = _topk_flat(flat_scores[index], count)
    elif kept < count:
        index = (~flat).nonzero().flatten()
        out[index] = _topk_flat(flat_scores[index], count - kept)
    adjusted = _split(out, masks)
    collapsed = collapsed_layers(adjusted)
    if collapsed:
        log.warning("trimming to %d weights leaves %d layer(s) empty (layer collapse): %s", count, len(collapsed),
                    ", ".join(collapsed))
    return adjusted


# ---------------------------------------------------------------------------------------------------- ERK


def _shapes(shapes_or_model) -> dict[str, tuple[int, ...]]:
    if isinstance(shapes_or_model, nn.Module):
        return {name: tuple(p.shape) for name, p in prunable_parameters(shapes_or_model).items()}
    return {name: tuple(s.shape) if isinstance(s, torch.Tensor) else tuple(int(d) for d in s)
            for name, s in dict(shapes_or_model).items()}


def erk_layer_densities(shapes_or_model, density: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel layer densities for a global `density`.

    `shapes_or_model` is a model (its prunable weights are used) or a mapping name -> shape (or tensor).
    Layer l gets `d_l = eps * sum(shape_l) / prod(shape_l)` (for a convolution
    `(C_out + C_in + kh + kw) / (C_out * C_in * kh * kw)`, for a linear layer `(C_out + C_in) / (C_out * C_in)`),
    one `eps` for all layers chosen so that `sum_l d_l N_l = density * N`. While the layer with the largest
    raw ratio would get a density above 1, it is made dense (density 1) and `eps` is recomputed over the rest.
    """
    density = _check_density(density)
    shapes = _shapes(shapes_or_model)
    if not shapes:
        raise ValueError("erk_layer_densities needs at least one layer")
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / numel[name] for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [name for name in shapes if name not in dense]
        if not sparse:  # cannot happen for density < 1, kept as a guard
            break
        # Weights the sparse layers must hold so that the global density is met.
        rhs = density * sum(numel.values()) - sum(numel[name] for name in dense)
        divisor = sum(raw[name] * numel[name] for name in sparse)
        epsilon = rhs / divisor
        largest = max(raw[name] for name in sparse)
        if epsilon * largest <= 1.0:
            break
        dense.update(name for name in sparse if raw[name] == largest)
    return {name: 1.0 if name in dense else epsilon * raw[name] for name in shapes}


# -------------------------------------------------------------------------------------------- random masks


def _random_layer_masks(params: Mapping[str, torch.Tensor], layer_density: Mapping[str, float], seed: int,
                        device: torch.device) -> Masks:
    generator = torch.Generator().manual_seed(int(seed))
    out = {}
    for name, param in params.items():
        n = param.numel()
        kept = int(round(layer_density[name] * n))
        flat = torch.zeros(n, dtype=torch.bool)
        flat[torch.randperm(n, generator=generator)[:kept]] = True
        out[name] = flat.view(param.shape).to(device)
    return out


# ------------------------------------------------------------------------------------------------- scoring


def _scoring_copy(model: nn.Module, noise: float, seed: int, dtype: torch.dtype | None = None) -> nn.Module:
    """A deep copy in eval mode with only its prunable weights requiring grad, optionally perturbed."""
    scorer = copy.deepcopy(model)
    if dtype is not None:
        scorer = scorer.to(dtype)
    scorer.eval()
    for param in scorer.parameters():
        param.requires_grad_(False)
        param.grad = None
    params = prunable_parameters(scorer)
    if noise > 0:
        generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for param in params.values():
                eps = torch.randn(param.shape, generator=generator, dtype=torch.float64)
                scale = noise * float(param.detach().abs().double().std()) if param.numel() > 1 else 0.0
                param.add_((eps * scale).to(param.device, param.dtype))
    for param in params.values():
        param.requires_grad_(True)
    return scorer


def _to_device(batch, device: torch.device, dtype: torch.dtype):
    x, y = batch
    x = torch.as_tensor(x).to(device)
    if x.is_floating_point():
        x = x.to(dtype)
    return x, torch.as_tensor(y).to(device, torch.long)


def _snip_scores(scorer: nn.Module, batches) -> dict[str, torch.Tensor]:
    params = prunable_parameters(scorer)
    weights = list(params.values())
    total = [torch.zeros_like(w) for w in weights]
    for batch in batches:
        x, y = _to_device(batch, weights[0].device, weights[0].dtype)
        loss = F.cross_entropy(scorer(x), y)
        for acc, grad in zip(total, torch.autograd.grad(loss, weights)):
            acc.add_(grad)
    return {name: (g * w.detach()).abs_() for (name, w), g in zip(params.items(), total)}


def _grasp_scores(scorer: nn.Module, batches, temperature: float = GRASP_TEMPERATURE) -> dict[str, torch.Tensor]:
    params = prunable_parameters(scorer)
    weights = list(params.values())
    device, dtype = weights[0].device, weights[0].dtype

    def grads(batch, create_graph: bool):
        x, y = _to_device(batch, device, dtype)
        loss = F.cross_entropy(scorer(x) / temperature, y)
        return torch.autograd.grad(loss, weights, create_graph=create_graph)

    # Pass 1: g, the detached gradient summed over the batches. The last batch keeps its graph so that pass 2
    # does not have to recompute it.
    stopped = [torch.zeros_like(w) for w in weights]
    kept_graph = None
    for index, batch in enumerate(batches):
        last = index == len(batches) - 1
        g = grads(batch, create_graph=last)
        for acc, gb in zip(stopped, g):
            acc.add_(gb.detach())
        if last:
            kept_graph = g
    # Pass 2: H g = sum over batches of d/dw (g_detached . grad_b).
    hg = [torch.zeros_like(w) for w in weights]
    for index in [len(batches) - 1] + list(range(len(batches) - 1)):
        g = kept_graph if index == len(batches) - 1 else grads(batches[index], create_graph=True)
        z = sum((s * gb).sum() for s, gb in zip(stopped, g))
        for acc, h in zip(hg, torch.autograd.grad(z, weights, allow_unused=True)):
            if h is not None:
                acc.add_(h)
        kept_graph = g = z = None
    return {name: w.detach() * h for (name, w), h in zip(params.items(), hg)}


def _synflow_input(model_dtype: torch.dtype, device: torch.device, batches) -> torch.Tensor:
    shape = DEFAULT_INPUT_SHAPE
    if batches:
        shape = tuple(torch.as_tensor(batches[0][0]).shape[1:])
    return torch.ones((1, *shape), dtype=model_dtype, device=device)


def _synflow_copy(model: nn.Module, noise: float, seed: int) -> nn.Module:
    scorer = _scoring_copy(model, noise, seed, dtype=torch.float64)
    with torch.no_grad():
        for tensor in scorer.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    return scorer


def _synflow_mask(scorer: nn.Module, density: float, rounds: int, batches) -> torch.Tensor:
    """Iterative SynFlow; returns the flat bool mask over the concatenated prunable weights.

    Per round: one forward and backward pass, the products `grad * w` written straight into one flat buffer,
    and the selection done only among the still-active weights (their number shrinks geometrically), so the
    pruned weights are simply zeroed in place instead of re-masking the whole network.
    """
    params = prunable_parameters(scorer)
    weights = list(params.values())
    device = weights[0].device
    sizes = [w.numel() for w in weights]
    total = sum(sizes)
    # All prunable weights live in one flat buffer (the parameters become views of it); the scores too.
    flat_weights = torch.cat([w.detach().reshape(-1) for w in weights])
    flat_scores = torch.empty_like(flat_weights)
    score_views, offset = [], 0
    for w, n in zip(weights, sizes):
        w.data = flat_weights[offset:offset + n].view(w.shape)
        score_views.append(flat_scores[offset:offset + n].view(w.shape))
        offset += n
    inputs = _synflow_input(torch.float64, device, batches)
    active = torch.arange(total, device=device)  # indices still kept, ascending (tie order = index order)
    for t in range(1, rounds + 1):
        kept = int(round(density ** (t / rounds) * total))
        if kept >= active.numel():
            continue
        grads = torch.autograd.grad(scorer(inputs).sum(), weights)
        with torch.no_grad():
            for grad, weight, view in zip(grads, weights, score_views):
                torch.mul(grad, weight, out=view)
            del grads
            active_scores = flat_scores.index_select(0, active).abs_()
            keep = _topk_flat(active_scores, kept)
            flat_weights.index_fill_(0, active[~keep], 0.0)
            active = active[keep]
    mask = torch.zeros(total, dtype=torch.bool, device=device)
    mask[active] = True
    return mask


def scores(model: nn.Module, method: str, batches: Batches | None = None, seed: int = 0, *,
           noise: float = 0.0) -> dict[str, torch.Tensor]:
    """Per-weight scores of a score-based method (higher = more important), keyed by parameter name.

    For synflow these are the one-shot scores of the unpruned network (the first of the iterative rounds);
    `make_mask` iterates. Scores live on the model's device (synflow in float64).
    """
    _check_method(method)
    noise = _check_noise(noise)
    if method not in SCORE_METHODS:
        raise ValueError(f"method {method!r} has no per-weight score; scores exist for {', '.join(SCORE_METHODS)}")
    if method in DATA_METHODS:
        batches = _materialise_batches(batches, method)
    elif batches is not None:
        batches = list(batches)
    with torch.enable_grad():
        if method == "synflow":
            scorer = _synflow_copy(model, noise, seed)
            params = prunable_parameters(scorer)
            output = scorer(_synflow_input(torch.float64, next(iter(params.values())).device, batches))
            grads = torch.autograd.grad(output.sum(), list(params.values()))
            return {name: (g * w.detach()).abs_() for (name, w), g in zip(params.items(), grads)}
        scorer = _scoring_copy(model, noise, seed)
        if method == "magnitude":
            return {name: w.detach().abs() for name, w in prunable_parameters(scorer).items()}
        if method == "snip":
            return _snip_scores(scorer, batches)
        return _grasp_scores(scorer, batches)


# ----------------------------------------------------------------------------------------------- make_mask


def collapsed_layers(masks: Mapping[str, torch.Tensor]) -> list[str]:
    """Layers left with no weight at all (layer collapse): they disconnect the network."""
    return empty_layers(masks)


def make_mask(model: nn.Module, method: str, density: float, batches: Batches | None = None, seed: int = 0, *,
              noise: float = 0.0, rounds: int = SYNFLOW_ROUNDS) -> Masks:
    """A PaI mask of `method` at `density` for every prunable weight of `model` (bool tensors on its device).

    `batches`: (x, y) pairs (normalised float images, int64 labels) for snip and grasp; for synflow only the
    first batch's image shape is used (default `[3, 32, 32]`); ignored otherwise. `seed` fixes all randomness
    (erk/random draws, `noise`). `noise` perturbs the scoring copy's weights (see the module docstring).
    `rounds` is SynFlow's number of pruning rounds (100 in the paper). The model is never modified.
    Logs a warning when a layer ends up empty (layer collapse).
    """
    _check_method(method)
    density = _check_density(density)
    noise = _check_noise(noise)
    if int(rounds) < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds!r}")
    params = prunable_parameters(model)
    if not params:
        raise ValueError("the model has no prunable (convolution, linear or attention) weight")
    device = next(iter(params.values())).device
    if method in DATA_METHODS:
        batches = _materialise_batches(batches, method)
    elif batches is not None:
        batches = list(batches)

    if method == "random":
        masks = _random_layer_masks(params, {name: density for name in params}, seed, device)
    elif method == "erk":
        masks = _random_layer_masks(params, erk_layer_densities(model, density), seed, device)
    elif method == "synflow":
        with torch.enable_grad():
            scorer = _synflow_copy(model, noise, seed)
            flat = _synflow_mask(scorer, density, int(rounds), batches)
        masks = _split(flat, params)
    else:
        masks = global_topk_mask(scores(model, method, batches, seed, noise=noise), density)
    masks = {name: m.to(device) for name, m in masks.items()}

    collapsed = collapsed_layers(masks)
    if collapsed:
        log.warning("%s mask at density %g leaves %d layer(s) empty (layer collapse): %s",
                    method, density, len(collapsed), ", ".join(collapsed))
    return masks
