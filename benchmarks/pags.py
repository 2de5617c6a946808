"""Time per PAGS candidate on full-width ResNet18 with SNIP at density 0.05, split into PaI scoring
(forward/backward on the scoring batches: hardware-bound) and everything else (graph metrics of the changed
layers, acceptance, bookkeeping, the state file).

    python benchmarks/pags.py [--device cuda] [--population 5] [--batches 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import SyntheticCifar  # noqa: E402

from fullspectrum import models, search  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--batches", type=int, default=4, help="scoring mini-batches of 128 per candidate (the authors: 4)")
    parser.add_argument("--method", default="snip")
    parser.add_argument("--density", type=float, default=0.05)
    args = parser.parse_args()
    device = torch.device(args.device)
    model = models.build_seeded("resnet18", 10, args.width, 0).to(device)
    dataset = SyntheticCifar(1024, device)
    cfg = search.SearchConfig(population=args.population, batches=args.batches, batch_size=128, snapshot_every=2)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = search.pags(model, args.method, args.density, dataset, cfg, seed=0, scoring_batches=args.batches,
                             workdir=tmp, progress=False)
        wall = time.perf_counter() - started
    per = result.summary["seconds_per_candidate"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"PAGS {args.method} on ResNet18 width {args.width}, density {args.density}, {name}; "
          f"{args.population} candidates, {args.batches} scoring batch(es) of 128")
    print(f"  PaI scoring per candidate      {per['scoring']:7.3f} s")
    print(f"  everything else per candidate  {per['other']:7.3f} s   (metrics, acceptance, bookkeeping, state I/O)")
    print(f"  whole candidate                {per['scoring'] + per['other']:7.3f} s")
    print(f"  wall time incl. the baseline's metrics and setup: {wall:.1f} s; "
          f"{result.summary['layers_accepted']} layers accepted, explored {result.summary['explored_share']:.1%}")


if __name__ == "__main__":
    main()
