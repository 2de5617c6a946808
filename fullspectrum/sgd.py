"""SGD with momentum, weight decay and Nesterov, as `torch.optim.SGD` computes it, with masks kept in the step.

Written out in a few `_foreach` ops rather than wrapping `torch.optim.SGD`: every `torch.optim` optimiser imports
`torch._dynamo` on first use (2-3 s of CPU per process), a cost each of the workflow's hundreds of short training
jobs would pay. Per element the arithmetic is torch's (`d = g + wd * w`; `b = m * b + d`; `d = d + m * b` with
Nesterov, else `d = b`; `w -= lr * d`), in the same order, so results agree bit for bit on the CPU.
"""

from __future__ import annotations

from typing import Iterable

import torch


class MaskedSGD:
    """SGD over `params`; with masks set, pruned weights and their momentum are zeroed after every step.

    Every parameter is expected to get a gradient (true of the models here); a missing one counts as zero, where
    torch.optim.SGD would skip the parameter.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], *, momentum: float, weight_decay: float,
                 nesterov: bool) -> None:
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.params = [p for p in params if p.requires_grad]
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        self.buffers: list[torch.Tensor] | None = None  # created by the first step, as torch.optim.SGD does
        self._masked: list[int] = []  # indices into self.params
        self._mask_values: list[torch.Tensor] = []

    def set_masks(self, params: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Keep `params` (some of the optimised ones) multiplied by `values` (0/1 in their dtype and layout) and
        zero what they prune now, weights and momentum alike."""
        index = {id(p): i for i, p in enumerate(self.params)}
        self._masked, self._mask_values = [index[id(p)] for p in params], values
        self.enforce_masks()

    @torch.no_grad()
    def enforce_masks(self) -> None:
        if not self._masked:
            return
        torch._foreach_mul_([self.params[i] for i in self._masked], self._mask_values)
        if self.buffers is not None:
            torch._foreach_mul_([self.buffers[i] for i in self._masked], self._mask_values)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, self.params, alpha=self.weight_decay)
        if self.momentum:
            if self.buffers is None:
                self.buffers = [g.detach().clone() for g in grads]
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, grads)
            if self.nesterov:
                grads = torch._foreach_add(grads, self.buffers, alpha=self.momentum)
            else:
                grads = self.buffers
        torch._foreach_add_(self.params, grads, alpha=-lr)
        self.enforce_masks()

    def momentum_buffer(self, param: torch.Tensor) -> torch.Tensor | None:
        """`param`'s momentum (None before the first step or for a parameter this optimiser does not hold)."""
        if self.buffers is None:
            return None
        return next((b for p, b in zip(self.params, self.buffers) if p is param), None)

    def state_dict(self) -> dict:
        return {"buffers": None if self.buffers is None else [b.detach().cpu() for b in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        """Restore the momentum; a ValueError if `state` is not this optimiser's (another model, another format)."""
        if not isinstance(state, dict) or "buffers" not in state:
            raise ValueError("not a MaskedSGD state")
        saved = state["buffers"]
        if saved is not None and [tuple(b.shape) for b in saved] != [tuple(p.shape) for p in self.params]:
            raise ValueError("optimiser state does not fit the model's parameters")
        self.buffers = None if saved is None else [
            torch.empty_like(p).copy_(b) for p, b in zip(self.params, saved)]
