"""The `fullspectrum` command (also `python -m fullspectrum`); `fullspectrum metrics` measures a model's mask.

    fullspectrum metrics --model torchvision:resnet50 --weights state_dict.pt --mask mask.pt --out table.csv
    fullspectrum metrics --model resnet18 --num-classes 100 --random-mask erk --density 0.05
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from tqdm import tqdm

from . import cli, graph, measure, pruning
from .masks import prunable_parameters

# Models with at least this many prunable weights get a progress bar (ResNet-50 has 25M: a few seconds).
_PROGRESS_MIN_WEIGHTS = 20_000_000
# The columns printed on screen; the CSV has them all (fullspectrum.measure.TABLE_COLUMNS).
_SHOWN = ("layer", "shape", "density") + graph.METRICS + ("undefined",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fullspectrum", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    metrics = commands.add_parser(
        "metrics", help="per-layer graph metrics of a model's mask",
        description="Per-layer graph metrics (delta_r, lambda_gap, delta_r_imdb, lambda_imdb, l2) of a mask on a "
                    "model's weights, the model means last. Layers: Conv1d/2d/3d (grouped too), Linear, "
                    "nn.MultiheadAttention's projections. The metrics are defined in the repository's "
                    "docs/design.md, section 'Layer graph'.")
    metrics.add_argument("--model", required=True,
                         help="torchvision:NAME (any torchvision classification model, e.g. torchvision:resnet50; "
                              "built without downloading weights) or resnet18 / resnet34 (this project's CIFAR "
                              "ResNets)")
    metrics.add_argument("--num-classes", type=int,
                         help="classifier outputs (default: torchvision's; for this project's models 10, or what "
                              "their weights file says)")
    metrics.add_argument("--width", type=int,
                         help="stem width of this project's models (default 64, or what the weights file says)")
    metrics.add_argument("--weights", help="a state dict or this project's weights file (default: the "
                                           "initialisation drawn with --seed)")
    metrics.add_argument("--seed", type=int, default=0, help="seed of the initialisation and of --random-mask")
    source = metrics.add_mutually_exclusive_group()
    source.add_argument("--mask", help="a {weight name: bool tensor} dict or this project's mask file, naming "
                                       "every prunable weight (default: the torch.nn.utils.prune masks saved "
                                       "in --weights)")
    source.add_argument("--random-mask", choices=("erk", "random", "magnitude"),
                        help="draw the mask with fullspectrum.pruning at --density")
    metrics.add_argument("--density", type=float, help="the density of --random-mask, in (0, 1)")
    metrics.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                         help="where the eigenproblems run (auto: cuda when available)")
    metrics.add_argument("--out", help="CSV to write the table to")
    return parser


def _masks(args: argparse.Namespace, model: torch.nn.Module, pruned: measure.Masks) -> measure.Masks:
    if (args.density is None) != (args.random_mask is None):
        raise ValueError("--random-mask and --density go together")
    if args.mask:
        return measure.read_masks(args.mask, model)
    if args.random_mask:
        return pruning.make_mask(model, args.random_mask, args.density, seed=args.seed)
    if not pruned:
        raise ValueError("no mask: give --mask or --random-mask (or --weights saved from a model pruned with "
                         "torch.nn.utils.prune)")
    masks, dense = measure.with_dense(pruned, model)
    if dense:
        print(f"note: {len(dense)} prunable weight(s) not pruned by torch.nn.utils.prune count as dense, e.g. "
              f"{dense[0]!r}", file=sys.stderr)
    return masks


def _metrics(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    state, meta = measure.read_weights(args.weights) if args.weights else (None, {})
    num_classes, width = args.num_classes, args.width
    if meta:  # this project's weights file: it says which model it fits
        if meta.get("model") != args.model:
            raise ValueError(f"weights file {args.weights} is for --model {meta.get('model')}, not {args.model}")
        num_classes = num_classes or meta.get("num_classes")
        width = width or meta.get("width")
    model = measure.build_model(args.model, num_classes, width, args.seed)
    pruned = measure.load_state(model, state, f"weights file {args.weights}") if state is not None else {}
    masks = _masks(args, model, pruned)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    model.to(device)
    masks = {name: mask.to(device) for name, mask in masks.items()}
    total = sum(param.numel() for param in prunable_parameters(model).values())
    with tqdm(total=total, desc="graph metrics", unit="weight", unit_scale=True, leave=False,
              disable=total < _PROGRESS_MIN_WEIGHTS) as bar:
        table = measure.metrics_table(model, masks, progress=bar.update)
    print(table[list(_SHOWN)].to_string(index=False, float_format=lambda value: f"{value:.6g}", na_rep="-"))
    if args.out:
        measure.write_table(table, args.out)
    print(f"{len(table) - 1} layers, {total} prunable weights at density {table['density'].iloc[-1]:.5f}, on "
          f"{device} in {time.perf_counter() - started:.1f} s" + (f" -> {args.out}" if args.out else ""),
          file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    cli.run(lambda: _metrics(args))


if __name__ == "__main__":
    main()
