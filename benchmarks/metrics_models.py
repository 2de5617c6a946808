"""Time fullspectrum.graph.model_metrics on big torchvision models beside the full-width CIFAR ResNet18.

    PYTHONPATH=. python benchmarks/metrics_models.py                     # resnet50 and vit_b_16, ERK 0.05
    PYTHONPATH=. python benchmarks/metrics_models.py --check            # and resnet50 through the command line

Every model gets an ERK mask at `--density` (seed 0) on its seeded initialisation. The models are timed in
turns, `--repeats` rounds, so that a busy machine slows them alike; the script prints each model's median wall
and CPU seconds and its ratio to the ResNet18 (the issue asks for resnet50 within 5x of it).

`--check` is the issue's "done when": it saves a torchvision resnet50's state dict and an ERK mask with plain
`torch.save` (as a user outside the project would), runs `python -m fullspectrum metrics` on them, and compares
every layer's five metrics with the straightforward computation (eigsh on the square adjacencies,
benchmarks/graph_reference.py); it fails above 1e-4 relative.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_reference import eigsh_top_two, expand_groups, straightforward_metrics  # noqa: E402

from fullspectrum import graph, measure, pruning  # noqa: E402
from fullspectrum.masks import prunable_parameters, weight_groups  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def build(spec: str, density: float):
    model = measure.build_model(spec, 10 if spec == "resnet18" else None, None, seed=0)
    return model, pruning.make_mask(model, "erk", density, seed=0)


def check_resnet50(density: float) -> None:
    """The command on a state dict and mask saved outside the project, against the straightforward values."""
    model, masks = build("torchvision:resnet50", density)
    with tempfile.TemporaryDirectory() as folder:
        weights, mask, out = (Path(folder) / name for name in ("state_dict.pt", "mask.pt", "table.csv"))
        torch.save(model.state_dict(), weights)
        torch.save(masks, mask)
        command = [sys.executable, "-m", "fullspectrum", "metrics", "--model", "torchvision:resnet50",
                   "--weights", str(weights), "--mask", str(mask), "--out", str(out), "--device", "cpu"]
        started = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
        print(f"command         : {time.perf_counter() - started:.1f} s (python -m fullspectrum metrics, resnet50)")
        table = measure.read_table(out).set_index("layer")
    groups, worst, started = weight_groups(model), 0.0, time.perf_counter()
    with threadpool_limits(1, user_api="blas"):
        for name, param in prunable_parameters(model).items():
            weight = expand_groups(param.detach().double().numpy(), groups[name])
            reference = straightforward_metrics(weight, expand_groups(masks[name].numpy(), groups[name]),
                                                eigsh_top_two)
            for key, expected in reference.items():
                got = table.loc[name, key]
                if math.isnan(expected) != math.isnan(got):
                    raise SystemExit(f"MISMATCH {name} {key}: command {got}, straightforward {expected}")
                if not math.isnan(expected):
                    worst = max(worst, abs(got - expected) / max(abs(expected), 1e-6))
    print(f"straightforward : {time.perf_counter() - started:.1f} s; largest relative difference {worst:.1e} over "
          f"{len(table) - 1} layers x 5 metrics")
    if worst > 1e-4:
        raise SystemExit("FAILED: the command disagrees with the straightforward computation above 1e-4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["torchvision:resnet50", "torchvision:vit_b_16"])
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="also run the resnet50 command-line check")
    args = parser.parse_args()

    specs = ["resnet18", *args.models]
    built = {spec: build(spec, args.density) for spec in specs}
    print(f"ERK density {args.density}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for model, masks in built.values():
        graph.model_metrics(model, masks)  # warm-up
    runs: dict[str, list[tuple[float, float]]] = {spec: [] for spec in specs}
    for _ in range(args.repeats):
        for spec, (model, masks) in built.items():
            runs[spec].append(timed(lambda: graph.model_metrics(model, masks)))
    base_wall = statistics.median(wall for wall, _ in runs["resnet18"])
    base_cpu = statistics.median(cpu for _, cpu in runs["resnet18"])
    for spec in specs:
        model, _ = built[spec]
        weights = sum(p.numel() for p in prunable_parameters(model).values())
        wall = statistics.median(w for w, _ in runs[spec])
        cpu = statistics.median(c for _, c in runs[spec])
        print(f"{spec:24s}: {weights / 1e6:6.1f}M weights, {wall:7.3f} s wall, {cpu:7.3f} s CPU (median of "
              f"{args.repeats}); x{wall / base_wall:5.2f} wall, x{cpu / base_cpu:5.2f} CPU of resnet18")
    if args.check:
        check_resnet50(args.density)


if __name__ == "__main__":
    main()
