"""K masked models trained at once: one fused model (fullspectrum.fused) vs K models in turn vs torch.func vmap.

    python benchmarks/fused_train.py                                     # CPU: width 8, K = 1, 2, 4, 8, 16
    python benchmarks/fused_train.py --width 64 --members 1,2,4 --steps 2 --batch 32 --threads 1  # CPU, paper width
    python benchmarks/fused_train.py --device cuda --width 64 --bf16 --steps 20                  # GPU

Each variant does one masked SGD step (ERK masks, Nesterov, weight decay) of K members on the same batch:
  sequential  K separate models, each its own forward, backward and MaskedSGD step (K jobs back to back);
  fused       fuse_models + member_losses + one MaskedSGD step over the fused parameters;
  vmap        the members' parameters stacked (torch.func.stack_module_state), functional_call vmapped over
              them with the input shared, one MaskedSGD step over the stacked parameters.
Throughput is member-images/s (K x batch per step), the median of alternating rounds (every round times every
K and variant in turn, so a noisy shared machine slows them alike). Memory, measured after the timing, one step
per variant: the variant's resident state (parameters, buffers, momentum, masks) plus the rise of the step's
peak over what was allocated before it (CUDA: torch.cuda.max_memory_allocated; CPU: the process's peak RSS
after malloc_trim, an approximation; "n/a" where /proc does not allow it).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import statistics
import time

import torch
import torch.nn.functional as F

from fullspectrum import models, pruning
from fullspectrum.fused import fuse_masks, fuse_models, member_losses
from fullspectrum.sgd import MaskedSGD

LR = 0.1
VARIANTS = ("sequential", "fused", "vmap")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def optimizer_with_masks(params: dict, masks: dict) -> MaskedSGD:
    """MaskedSGD over `params` (name -> tensor), masks as float copies in each weight's own layout."""
    optimizer = MaskedSGD(params.values(), momentum=0.9, weight_decay=5e-4, nesterov=True)
    names = [name for name in params if name in masks]
    optimizer.set_masks([params[n] for n in names], [torch.empty_like(params[n]).copy_(masks[n]) for n in names])
    return optimizer


class Variant:
    """One way of training K members; `step(x, y)` is one masked SGD step of all of them."""

    def __init__(self, kind: str, nets: list, masks: list, args, device: torch.device) -> None:
        self.kind, self.K, self.device = kind, len(nets), device
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if args.bf16 and device.type == "cuda"
                         else contextlib.nullcontext())
        layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        if kind == "sequential":
            self.nets = [net.to(device, memory_format=layout).train() for net in nets]
            self.optimizers = [optimizer_with_masks(dict(net.named_parameters()), m)
                               for net, m in zip(self.nets, masks)]
        elif kind == "fused":
            self.net = fuse_models(nets).to(device, memory_format=layout).train()
            fused_masks = {k: v.to(device) for k, v in fuse_masks(masks).items()}
            self.optimizer = optimizer_with_masks(dict(self.net.named_parameters()), fused_masks)
        else:
            from torch.func import functional_call, stack_module_state, vmap

            nets = [net.to(device).train() for net in nets]
            self.params, self.buffers = stack_module_state(nets)  # [K, ...] leaves; BN buffers updated in place
            base = nets[0].to("meta")

            def call(params, buffers, x):
                return functional_call(base, (params, buffers), (x,))

            self.forward = vmap(call, in_dims=(0, 0, None))
            stacked_masks = {n: torch.stack([m[n] for m in masks]).to(device) for n in masks[0]}
            self.optimizer = optimizer_with_masks(self.params, stacked_masks)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.kind == "sequential":
            for net, optimizer in zip(self.nets, self.optimizers):
                with self.autocast:
                    loss = F.cross_entropy(net(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step(LR)
            return
        with self.autocast:
            if self.kind == "fused":
                losses = member_losses(self.net(x), y)
            else:
                losses = member_losses(self.forward(self.params, self.buffers, x).transpose(0, 1), y)
        self.optimizer.zero_grad()
        losses.sum().backward()
        self.optimizer.step(LR)

    def state_bytes(self) -> int:
        optimizers = self.optimizers if self.kind == "sequential" else [self.optimizer]
        tensors = [t for o in optimizers for t in o.params + (o.buffers or []) + list(o._mask_values)]
        if self.kind == "sequential":
            tensors += [b for net in self.nets for b in net.buffers()]
        elif self.kind == "fused":
            tensors += list(self.net.buffers())
        else:
            tensors += list(self.buffers.values())
        return sum(t.numel() * t.element_size() for t in tensors)


def timed(variant: Variant, batches: list, steps: int, start: int) -> float:
    """Seconds per step over `steps` steps."""
    sync(variant.device)
    begin = time.perf_counter()
    for i in range(steps):
        x, y = batches[(start + i) % len(batches)]
        variant.step(x, y)
    sync(variant.device)
    return (time.perf_counter() - begin) / steps


def _proc_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


def step_peak_bytes(variant: Variant, batch) -> int | None:
    """How far one step's peak memory rises above what is allocated before it (None if not measurable)."""
    device = variant.device
    gc.collect()
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        variant.step(*batch)
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the system, so RSS ~ what is alive
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        base = _proc_kib("VmRSS")
        variant.step(*batch)
        return (_proc_kib("VmHWM") - base) * 1024
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--model", default="resnet18", choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--members", default="1,2,4,8,16", help="comma-separated K values")
    parser.add_argument("--steps", type=int, default=1, help="steps per variant per timing round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--density", type=float, default=0.01, help="ERK density of every member's mask")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA)")
    parser.add_argument("--no-vmap", dest="vmap", action="store_false", help="skip the torch.func vmap variant")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default torch's; 1 is steadier on cores shared with other work)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    member_counts = [int(k) for k in args.members.split(",")]
    variants = [v for v in VARIANTS if args.vmap or v != "vmap"]

    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch, 3, 32, 32, generator=generator),
                torch.randint(0, args.classes, (args.batch,), generator=generator)) for _ in range(4)]
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    batches = [(x.to(device).contiguous(memory_format=layout), y.to(device)) for x, y in batches]

    setups: dict[tuple[int, str], Variant] = {}
    for K in member_counts:
        nets = [models.build_seeded(args.model, args.classes, args.width, seed) for seed in range(K)]
        masks = [pruning.make_mask(net, "erk", args.density, seed=seed) for seed, net in enumerate(nets)]
        for kind in variants:
            copies = [models.build_seeded(args.model, args.classes, args.width, seed) for seed in range(K)]
            setups[K, kind] = Variant(kind, copies, masks, args, device)
            timed(setups[K, kind], batches, 1, 0)  # warm-up: cudnn.benchmark, allocator, vmap tracing

    times = {key: [] for key in setups}
    for r in range(args.rounds):
        for K in member_counts:
            for kind in variants:
                times[K, kind].append(timed(setups[K, kind], batches, args.steps, r * args.steps))

    peaks = {key: step_peak_bytes(variant, batches[0]) for key, variant in setups.items()}

    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU, {torch.get_num_threads()} threads")
    precision = "bf16 autocast" if args.bf16 and device.type == "cuda" else "fp32"
    print(f"{args.model} width {args.width}, batch {args.batch}, ERK density {args.density}, {name}, {precision}; "
          f"median of {args.rounds} rounds x {args.steps} steps; member-images/s (K x batch per step)")
    print()
    header = ["K"] + [f"{v} img/s" for v in variants] + [f"{v}/seq" for v in variants[1:]] + \
        [f"{v} MiB" for v in variants]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    speedups = {}
    for K in member_counts:
        rate = {v: K * args.batch / statistics.median(times[K, v]) for v in variants}
        ratios = [rate[v] / rate["sequential"] for v in variants[1:]]
        speedups[K] = ratios[0]
        memory = []
        for v in variants:
            peak = peaks[K, v]
            memory.append("n/a" if peak is None else f"{(setups[K, v].state_bytes() + peak) / 2**20:.0f}")
        cells = [str(K)] + [f"{rate[v]:.0f}" for v in variants] + [f"{r:.2f}" for r in ratios] + memory
        print("| " + " | ".join(cells) + " |")
    best = max(speedups, key=speedups.get)
    print()
    print(f"suggested train.members: {best}, resources.fused_speedup: {speedups[best]:.2f}")


if __name__ == "__main__":
    main()
