"""Time fullspectrum.graph.model_metrics beside the straightforward method, on the same mask, in the same run.

    PYTHONPATH=. python benchmarks/graph_metrics.py                       # ResNet18, width 64, ERK density 0.05
    PYTHONPATH=. python benchmarks/graph_metrics.py --density 0.1 --repeats 10 --threads 1

The straightforward method is the authors': for every layer and every valid degree group, build the sparse
(n_out + n_in) square adjacency and take its three largest-magnitude eigenvalues with scipy's `eigsh` (k=3):
s1 is the largest, s2 the third (the eigenvalues come in +-s pairs). It runs once (it is slow); model_metrics
runs `--repeats` times and the median is reported, with the fastest run (on a shared machine, the run least
slowed by others). Both wall-clock and process CPU seconds are printed: the machine may be shared, and CPU seconds
show what the method costs. eigsh runs on one thread (its BLAS is limited here). model_metrics runs torch and
BLAS on one thread; when torch may use two or more threads (its default on a multi-core machine), it adds two
worker threads (fullspectrum.graph._workers), so its CPU seconds exceed its wall seconds: `--threads 1` measures
it on one thread. The script fails if any metric differs by more than 1e-5 relative between the two.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import sys
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_reference import eigsh_top_two, straightforward_metrics  # noqa: E402

from fullspectrum import graph, models, pruning  # noqa: E402
from fullspectrum.masks import prunable_parameters  # noqa: E402


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="where model_metrics computes (the reference: CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = models.build_seeded(args.model, args.classes, args.width, seed=0)
    masks = pruning.make_mask(model, "erk", args.density, seed=0)
    params = prunable_parameters(model)
    arrays = {name: (p.detach().numpy().astype(np.float64), masks[name].numpy()) for name, p in params.items()}
    model, masks = model.to(args.device), {name: mask.to(args.device) for name, mask in masks.items()}
    workers = "with worker threads" if torch.get_num_threads() >= 2 else "on one thread"
    print(f"{args.model} width {args.width}, {len(params)} prunable layers, ERK density {args.density}, "
          f"model_metrics on {args.device} {workers} (torch threads {torch.get_num_threads()}), "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    graph.model_metrics(model, masks)  # warm-up (imports, allocator)
    runs = [timed(lambda: graph.model_metrics(model, masks)) for _ in range(args.repeats)]
    table = runs[-1][0].set_index("layer")
    fast_wall = statistics.median(r[1] for r in runs)
    fast_cpu = statistics.median(r[2] for r in runs)

    with threadpool_limits(1, user_api="blas"):  # one thread
        slow, slow_wall, slow_cpu = timed(lambda: {name: straightforward_metrics(*pair, eigsh_top_two) for name, pair in arrays.items()})

    worst = 0.0
    for name, reference in slow.items():
        for key, expected in reference.items():
            got = table.loc[name, key]
            if math.isnan(expected) or math.isnan(got):
                if not (math.isnan(expected) and math.isnan(got)):
                    raise SystemExit(f"MISMATCH {name} {key}: model_metrics {got}, straightforward {expected}")
                continue
            difference = abs(got - expected) / max(abs(expected), 1e-6)
            worst = max(worst, difference)
            if difference > 1e-5:
                raise SystemExit(f"MISMATCH {name} {key}: model_metrics {got}, straightforward {expected}")

    print(f"model_metrics   : {fast_wall:7.3f} s wall, {fast_cpu:7.3f} s CPU (median of {args.repeats}; "
          f"fastest {min(r[1] for r in runs):.3f} s wall, {min(r[2] for r in runs):.3f} s CPU)")
    print(f"straightforward : {slow_wall:7.3f} s wall, {slow_cpu:7.3f} s CPU (eigsh k=3 on square adjacencies)")
    print(f"speed-up        : {slow_wall / fast_wall:7.1f}x wall, {slow_cpu / fast_cpu:7.1f}x CPU")
    print(f"agreement       : largest relative difference {worst:.1e} over {len(slow)} layers x 5 metrics")
    print(f"model mean      : delta_r_imdb {table.loc['model_mean', 'delta_r_imdb']:.4f}, "
          f"l2 {table.loc['model_mean', 'l2']:.4f}")


if __name__ == "__main__":
    main()
