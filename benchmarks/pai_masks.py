"""Time PaI mask construction (fullspectrum.pruning.make_mask) on full-width CIFAR ResNet18.

    PYTHONPATH=. python benchmarks/pai_masks.py                      # snip grasp erk synflow on the CPU
    PYTHONPATH=. python benchmarks/pai_masks.py --methods synflow --baseline-rounds 10

Prints seconds per method. With `--baseline-rounds R > 0` it also times R rounds of a plain SynFlow loop (masks
applied inside the forward pass through `weight * mask`, all N scores concatenated and thresholded with
`torch.kthvalue` every round, as in Synaptic-Flow) and extrapolates to the full number of rounds, for comparison
with the implementation in `fullspectrum.pruning` (flat weight buffer masked in place, selection restricted to the
still-active weights).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.func import functional_call

from fullspectrum import models, pruning
from fullspectrum.masks import density as mask_density, empty_layers, prunable_parameters


def plain_synflow_rounds(model: torch.nn.Module, density: float, rounds: int, total_rounds: int) -> float:
    """Seconds for `rounds` rounds of a plain SynFlow loop (the first `rounds` of a `total_rounds` schedule)."""
    scorer = copy.deepcopy(model).double().eval()
    state = {k: (v.abs() if v.is_floating_point() else v) for k, v in scorer.state_dict().items()}
    names = list(prunable_parameters(scorer))
    masks = {n: torch.ones_like(state[n]) for n in names}
    ones = torch.ones(1, 3, 32, 32, dtype=torch.float64)
    n_total = sum(m.numel() for m in masks.values())
    start = time.perf_counter()
    for t in range(1, rounds + 1):
        weights = {n: state[n].clone().requires_grad_() for n in names}
        current = {**state, **{n: weights[n] * masks[n] for n in names}}
        functional_call(scorer, current, (ones,)).sum().backward()
        scores = torch.cat([(weights[n].grad * state[n]).abs().reshape(-1) for n in names])
        keep = round(density ** (t / total_rounds) * n_total)
        threshold = torch.kthvalue(scores, n_total - keep).values
        masks = {n: ((weights[n].grad * state[n]).abs() > threshold).double() for n in names}
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["snip", "grasp", "erk", "synflow"], choices=pruning.METHODS)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--baseline-rounds", type=int, default=0,
                        help="time this many rounds of a plain SynFlow loop and extrapolate to 100 (0: skip)")
    args = parser.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = models.build_seeded("resnet18", 10, args.width, seed=0).to(device)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch_size, 3, 32, 32, generator=generator).to(device),
                torch.randint(0, 10, (args.batch_size,), generator=generator).to(device))
               for _ in range(args.batches)]
    n_weights = sum(p.numel() for p in prunable_parameters(model).values())
    print(f"resnet18 width {args.width}: {n_weights:,} prunable weights; density {args.density}; "
          f"{args.batches} batch(es) of {args.batch_size}; device {device}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    for method in args.methods:
        start = time.perf_counter()
        masks = pruning.make_mask(model, method, args.density, batches, seed=0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        print(f"{method:10s} {seconds:8.2f} s   density {mask_density(masks):.6f}   "
              f"empty layers {len(empty_layers(masks))}", flush=True)
    if args.baseline_rounds > 0:
        seconds = plain_synflow_rounds(model.cpu(), args.density, args.baseline_rounds, pruning.SYNFLOW_ROUNDS)
        per_round = seconds / args.baseline_rounds
        print(f"plain synflow loop: {seconds:.2f} s for {args.baseline_rounds} rounds, {per_round:.3f} s/round, "
              f"~{per_round * pruning.SYNFLOW_ROUNDS:.1f} s for {pruning.SYNFLOW_ROUNDS} rounds (extrapolated)")


if __name__ == "__main__":
    main()
