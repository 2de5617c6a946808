"""K masked copies of one network trained as one fused network (HFTA, Wang et al., MLSys 2021).

Why: the workflow trains many small sparse ResNets that differ only in mask (and seed). One at a time, each step is
a long chain of small kernels that leaves a GPU mostly idle. Fused, the K members run in one pass over the shared
batch: the stem convolution reads the input once and writes K members' channels; every later convolution is
grouped (K times its own groups), so member k's channels only ever read member k's channels; BatchNorm is
per-channel, the classifier a batched matmul (one GEMM per member). No member reads another's channels, so a
member that diverges keeps its NaNs to its own channels and the others go on bit for bit as without it.

Layout ("member-major"): every fused parameter and buffer (num_batches_tracked aside) splits along dim 0 into K
equal blocks, block k being member k's (`member_view`). The fused model keeps the member's parameter names, so
`prunable_parameters`, masks, MaskedSGD and momentum buffers line up name for name; a fused optimiser step is K
independent optimiser steps, since SGD is element-wise. The training loss is the sum of the members' mean losses
(`member_losses`): members share no parameter, so each gets exactly its own gradient.

Assumed of the members: the first Conv2d in module order is the one that reads the raw input (true of the CIFAR
ResNets here), and only Conv2d, BatchNorm2d and Linear modules hold parameters or buffers.
"""

from __future__ import annotations

import copy
import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BatchedLinear", "fuse_models", "fuse_masks", "member_view", "member_state_dicts",
           "member_parameter_views", "split_tensors", "load_member_state_dict", "member_losses", "reset_member",
           "fused_members"]

_SUPPORTED = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class BatchedLinear(nn.Linear):
    """K linear layers side by side: weight [K, out, in], bias [K, out] (or none).

    Takes [..., K*in] (the members' features concatenated, member-major) and returns [..., K, out]. A subclass of
    nn.Linear so that the fused classifier's weight counts as prunable, under the member's name.
    """

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        nn.Module.__init__(self)  # not nn.Linear.__init__: no [out, in] weight, no initialisation
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features, device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.empty(members, out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        if self.members == 1:  # exactly nn.Linear's computation (a single fused member is bitwise its model)
            out = F.linear(x, self.weight[0], None if self.bias is None else self.bias[0])
            return out.unsqueeze(-2)
        xs = x.reshape(-1, self.members, self.in_features).transpose(0, 1)  # [K, M, in]
        weight = self.weight.transpose(1, 2)  # [K, in, out]
        if self.bias is None:
            out = torch.bmm(xs, weight)
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), xs, weight)
        return out.transpose(0, 1).reshape(*lead, self.members, self.out_features)

    def extra_repr(self) -> str:
        return (f"members={self.members}, in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


# --------------------------------------------------------------------------------------------- fusing


def _check_members(models: Sequence[nn.Module]) -> None:
    if len(models) < 1:
        raise ValueError("fuse_models needs at least one model")
    first = models[0]
    first_modules = dict(first.named_modules())
    first_state = first.state_dict()
    for index, model in enumerate(models[1:], start=1):
        if type(model) is not type(first):
            raise ValueError(f"member {index} is a {type(model).__name__}, member 0 a {type(first).__name__}")
        modules = dict(model.named_modules())
        if list(modules) != list(first_modules):
            raise ValueError(f"member {index} has other modules than member 0 (another architecture)")
        for name, module in modules.items():
            other = first_modules[name]
            if type(module) is not type(other) or module.extra_repr() != other.extra_repr():
                raise ValueError(f"member {index}'s module {name or '<root>'!r} is {module!r}, member 0's "
                                 f"{other!r}")
        state = model.state_dict()
        if list(state) != list(first_state):
            raise ValueError(f"member {index}'s state_dict has other keys than member 0's")
        for key, value in state.items():
            ref = first_state[key]
            if value.shape != ref.shape or value.dtype != ref.dtype or value.device != ref.device:
                raise ValueError(f"member {index}'s {key!r} is {value.dtype} {tuple(value.shape)} on {value.device},"
                                 f" member 0's {ref.dtype} {tuple(ref.shape)} on {ref.device}")
    for name, module in first_modules.items():
        own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        if not own:
            continue
        if type(module) not in _SUPPORTED:
            raise ValueError(f"cannot fuse module {name or '<root>'!r} ({type(module).__name__}): only Conv2d, "
                             "BatchNorm2d and Linear may hold parameters or buffers")
        allowed = _BN_BUFFERS + ("weight", "bias") if isinstance(module, nn.BatchNorm2d) else ("weight", "bias")
        odd = [n for n, _ in own if n not in allowed]
        if odd:  # e.g. torch.nn.utils.prune's weight_orig / weight_mask
            raise ValueError(f"cannot fuse module {name!r}: unexpected parameters or buffers {odd}")


def _cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach() for t in tensors], 0)


def _parameter(value: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(value, requires_grad=like.requires_grad)


def _fuse_conv(convs: Sequence[nn.Conv2d], stem: bool) -> nn.Conv2d:
    K, c = len(convs), convs[0]
    if stem and c.groups != 1:
        raise ValueError("cannot fuse a grouped stem convolution (the first Conv2d reads the shared input; its "
                         "members' output channels would not stay in member-major groups)")
    fused = nn.Conv2d(c.in_channels if stem else K * c.in_channels, K * c.out_channels, c.kernel_size,
                      stride=c.stride, padding=c.padding, dilation=c.dilation,
                      groups=c.groups if stem else K * c.groups, bias=c.bias is not None,
                      padding_mode=c.padding_mode, device="meta", dtype=c.weight.dtype)
    fused.weight = _parameter(_cat([m.weight for m in convs]), c.weight)
    if c.bias is not None:
        fused.bias = _parameter(_cat([m.bias for m in convs]), c.bias)
    return fused


def _fuse_bn(bns: Sequence[nn.BatchNorm2d], name: str) -> nn.BatchNorm2d:
    K, b = len(bns), bns[0]
    fused = nn.BatchNorm2d(K * b.num_features, eps=b.eps, momentum=b.momentum, affine=b.affine,
                           track_running_stats=b.track_running_stats, device="meta",
                           dtype=(b.weight if b.affine else b.running_mean).dtype)
    if b.affine:
        fused.weight = _parameter(_cat([m.weight for m in bns]), b.weight)
        fused.bias = _parameter(_cat([m.bias for m in bns]), b.bias)
    if b.track_running_stats:
        fused.running_mean = _cat([m.running_mean for m in bns])
        fused.running_var = _cat([m.running_var for m in bns])
        counts = [int(m.num_batches_tracked) for m in bns]
        if b.momentum is None and len(set(counts)) > 1:
            raise ValueError(f"cannot fuse {name!r}: with momentum=None (cumulative averages) the members' "
                             f"num_batches_tracked must agree, got {counts}")
        # Only read when momentum is None; otherwise a counter, member 0's kept.
        fused.num_batches_tracked = b.num_batches_tracked.detach().clone()
    return fused


def _fuse_linear(linears: Sequence[nn.Linear]) -> BatchedLinear:
    K, lin = len(linears), linears[0]
    fused = BatchedLinear(K, lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta",
                          dtype=lin.weight.dtype)
    fused.weight = _parameter(torch.stack([m.weight.detach() for m in linears]), lin.weight)
    if lin.bias is not None:
        fused.bias = _parameter(torch.stack([m.bias.detach() for m in linears]), lin.bias)
    return fused


@torch.no_grad()
def fuse_models(models: Sequence[nn.Module]) -> nn.Module:
    """One model computing the K `models` at once: input [N, ...] shared, output [N, K, classes].

    A deep copy of `models[0]` whose Conv2d, BatchNorm2d and Linear modules are replaced by member-major fused
    ones (the module docstring); parameter names are the member's. Draws no random numbers. A ValueError if the
    members differ in architecture, dtype or device, or hold parameters in any other kind of module.
    """
    models = list(models)
    _check_members(models)
    K = len(models)
    fused = copy.deepcopy(models[0])
    per_member = [dict(m.named_modules()) for m in models]
    stem_seen = False
    for name, module in list(fused.named_modules()):
        if type(module) not in _SUPPORTED:
            continue
        group = [modules[name] for modules in per_member]
        if isinstance(module, nn.Conv2d):
            replacement = _fuse_conv(group, stem=not stem_seen)
            stem_seen = True
        elif isinstance(module, nn.BatchNorm2d):
            replacement = _fuse_bn(group, name)
        else:
            replacement = _fuse_linear(group)
        replacement.train(module.training)
        if not name:
            raise ValueError("cannot fuse a bare Conv2d/BatchNorm2d/Linear; fuse a model that contains it")
        parent_name, _, attribute = name.rpartition(".")
        setattr(fused.get_submodule(parent_name), attribute, replacement)
    fused.fused_members = K
    return fused


def fused_members(fused: nn.Module) -> int:
    """K of a model made by `fuse_models`."""
    try:
        return int(fused.fused_members)
    except AttributeError:
        raise ValueError("not a model made by fuse_models") from None


def fuse_masks(member_masks: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The members' masks in the fused model's shapes: convolution masks concatenated along dim 0, linear
    (2-D) masks stacked into [K, out, in], exactly as `fuse_models` lays out the weights."""
    member_masks = list(member_masks)
    if not member_masks:
        raise ValueError("fuse_masks needs at least one member's masks")
    names = list(member_masks[0])
    out = {}
    for index, masks in enumerate(member_masks):
        if list(masks) != names:
            raise ValueError(f"member {index}'s masks name other weights than member 0's")
    for name in names:
        parts = [masks[name] for masks in member_masks]
        shapes = {tuple(p.shape) for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"mask {name!r} has different shapes across members: {sorted(shapes)}")
        if parts[0].dim() == 2:
            out[name] = torch.stack(parts)
        elif parts[0].dim() == 4:
            out[name] = torch.cat(parts, 0)
        else:
            raise ValueError(f"mask {name!r} of shape {tuple(parts[0].shape)} is neither a Conv2d nor a Linear "
                             "weight's")
    return out


# --------------------------------------------------------------------------------------------- splitting


def member_view(tensor: torch.Tensor, k: int, K: int, shape: torch.Size | Sequence[int]) -> torch.Tensor:
    """Member k's block of a member-major fused tensor, as a view in the member's `shape` (writes go through)."""
    shape = torch.Size(shape)
    if not 0 <= k < K:
        raise ValueError(f"member {k} out of range for K={K}")
    if tensor.dim() == 0 or tensor.shape[0] % K or tensor.numel() != K * math.prod(shape):
        raise ValueError(f"a tensor of shape {tuple(tensor.shape)} is not K={K} member-major blocks of "
                         f"{tuple(shape)}")
    block = tensor.shape[0] // K
    return tensor.narrow(0, k * block, block).view(shape)


def member_state_dicts(fused: nn.Module, K: int, template: nn.Module) -> list[dict[str, torch.Tensor]]:
    """The K members' state_dicts in `template`'s shapes (copies, loadable with `template.load_state_dict`)."""
    fused_state, shapes = fused.state_dict(), template.state_dict()
    if list(fused_state) != list(shapes):
        raise ValueError("the fused model's state_dict keys are not the template's")
    out = []
    for k in range(K):
        state = {}
        for key, ref in shapes.items():
            value = fused_state[key]
            state[key] = (value.detach().clone() if ref.dim() == 0
                          else member_view(value.detach(), k, K, ref.shape).clone())
        out.append(state)
    return out


def member_parameter_views(fused: nn.Module, K: int, template: nn.Module) -> list[dict[str, torch.Tensor]]:
    """For each member, {parameter name: view of its block of the fused parameter} in the template's shapes."""
    shapes = dict(template.named_parameters())
    params = dict(fused.named_parameters())
    if list(params) != list(shapes):
        raise ValueError("the fused model's parameters are not the template's")
    return [{name: member_view(p.detach(), k, K, shapes[name].shape) for name, p in params.items()}
            for k in range(K)]


def split_tensors(fused: nn.Module, tensors: Sequence[torch.Tensor], K: int,
                  template: nn.Module) -> list[list[torch.Tensor]]:
    """Tensors aligned with `fused.parameters()` (gradients, MaskedSGD momentum buffers), split into each member's
    list of views aligned with `template.parameters()`."""
    shapes = [p.shape for p in template.parameters()]
    tensors = list(tensors)
    if len(tensors) != len(shapes):
        raise ValueError(f"{len(tensors)} tensors for {len(shapes)} parameters")
    return [[member_view(t, k, K, s) for t, s in zip(tensors, shapes)] for k in range(K)]


@torch.no_grad()
def load_member_state_dict(fused: nn.Module, k: int, K: int, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Write one member's state_dict (member shapes) into its block of the fused model (num_batches_tracked, a
    value shared by all members, is left alone)."""
    fused_state = fused.state_dict(keep_vars=True)
    if set(state_dict) != set(fused_state):
        raise ValueError("the state_dict's keys are not the fused model's")
    for key, value in state_dict.items():
        if value.dim() == 0:
            continue
        member_view(fused_state[key].data, k, K, value.shape).copy_(value)


# --------------------------------------------------------------------------------------------- training


def member_losses(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """[K] mean cross-entropies of logits [N, K, C] against the shared labels y [N]; member k's equals
    `F.cross_entropy(logits[:, k], y, label_smoothing=...)` (bitwise for K = 1, to rounding otherwise)."""
    if logits.dim() != 3 or y.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [N, K, C] and labels [N], got {tuple(logits.shape)} and {tuple(y.shape)}")
    K = logits.shape[1]
    if K == 1:
        return F.cross_entropy(logits[:, 0], y, label_smoothing=label_smoothing).unsqueeze(0)
    per_image = F.cross_entropy(logits.transpose(1, 2), y.unsqueeze(1).expand(-1, K), reduction="none",
                                label_smoothing=label_smoothing)  # [N, K]
    return per_image.mean(0)


@torch.no_grad()
def reset_member(fused: nn.Module, k: int, K: int, masks: Mapping[str, torch.Tensor] | None = None,
                 momentum: Sequence[torch.Tensor] | None = None) -> None:
    """Freeze member k (e.g. after its loss went non-finite): zero its block of every parameter, of the given
    fused `masks` (any dtype: the bool masks, or the float copies a MaskedSGD multiplies by) and of the `momentum`
    buffers (aligned with `fused.parameters()`); running_mean 0, running_var 1. Its channels then compute finite
    numbers again, and under MaskedSGD its masked weights stay exactly zero. The other members are untouched."""
    if not 0 <= k < K:
        raise ValueError(f"member {k} out of range for K={K}")

    def block(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0 or t.shape[0] % K:
            raise ValueError(f"a tensor of shape {tuple(t.shape)} is not K={K} member-major blocks")
        size = t.shape[0] // K
        return t.narrow(0, k * size, size)

    for param in fused.parameters():
        block(param.data).zero_()
    for module in fused.modules():
        if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
            block(module.running_mean).zero_()
            block(module.running_var).fill_(1.0)
    for mask in (masks or {}).values():
        block(mask).zero_()
    if momentum is not None:
        for buffer in momentum:
            if buffer is not None:
                block(buffer).zero_()
