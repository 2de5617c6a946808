"""Degree matching: the density at which a narrow network's layer graphs have the paper's node degrees.

A layer's graph metrics depend on its node degrees: an output node of a `[C_out, C_in, k, k]` layer at density d
has mean degree d·C_in·k², an input node d·C_out. Every hidden layer of the CIFAR ResNets scales C_in and C_out with
the width, so a width-w network at density d·W/w has, layer by layer, the degrees of the width-W network at d. The
stem (3 input channels) and the classifier (one output per class) do not scale; `compare` shows them too.

    python -m fullspectrum.degrees --width 8 --paper-width 64 --paper-density 0.01
"""

from __future__ import annotations

import argparse
import math

import pandas as pd
import torch

from .masks import prunable_parameters
from .models import build
from .pruning import erk_layer_densities


def degree_matched_density(paper_density: float, paper_width: int, width: int) -> float:
    """The density at which a width-`width` network's hidden layers have the degrees of the paper's network."""
    if paper_width <= 0 or width <= 0:
        raise ValueError(f"widths must be positive, got paper_width={paper_width}, width={width}")
    density = paper_density * paper_width / width
    if not 0 < density < 1:
        raise ValueError(f"density {paper_density} at width {paper_width} matches density {density:g} at width "
                         f"{width}, outside (0, 1): choose a larger width")
    return density


def expected_degrees(shape: tuple[int, ...], density: float) -> tuple[float, float]:
    """Mean output and input degree of a layer of `shape` ([C_out, C_in, k...] or [C_out, C_in]) at `density`."""
    c_out, c_in = shape[0], shape[1]
    kernel = math.prod(shape[2:])
    return density * c_in * kernel, density * c_out


def layer_degrees(shapes: dict[str, tuple[int, ...]], density: float, rule: str = "erk") -> pd.DataFrame:
    """Per layer: the layer density under `rule` (erk: the Erdős–Rényi-Kernel allocation; uniform: `density`
    everywhere), the mean output and input degrees it gives, and whether they meet the graph metrics' validity
    (mean output degree >= 3 and mean input degree > 1, `fullspectrum.graph`)."""
    if rule not in ("erk", "uniform"):
        raise ValueError(f"rule must be erk or uniform, got {rule!r}")
    densities = erk_layer_densities(shapes, density) if rule == "erk" else {name: density for name in shapes}
    rows = []
    for name, shape in shapes.items():
        out_degree, in_degree = expected_degrees(shape, densities[name])
        rows.append({"layer": name, "shape": "x".join(map(str, shape)), "density": densities[name],
                     "out_degree": out_degree, "in_degree": in_degree,
                     "defined": out_degree >= 3 and in_degree > 1})
    return pd.DataFrame(rows)


def model_shapes(model: str, width: int, num_classes: int = 10) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        network = build(model, num_classes, width)
    return {name: tuple(param.shape) for name, param in prunable_parameters(network).items()}


def compare(model: str, width: int, paper_width: int, paper_density: float, rule: str = "erk",
            num_classes: int = 10) -> pd.DataFrame:
    """The paper's network at `paper_density` beside the narrow one at the degree-matched density, layer by layer."""
    density = degree_matched_density(paper_density, paper_width, width)
    paper = layer_degrees(model_shapes(model, paper_width, num_classes), paper_density, rule)
    narrow = layer_degrees(model_shapes(model, width, num_classes), density, rule)
    if list(paper["layer"]) != list(narrow["layer"]):
        raise ValueError("the two widths give different layers")
    table = paper[["layer"]].copy()
    for prefix, frame in ((f"w{paper_width}", paper), (f"w{width}", narrow)):
        for column in ("shape", "density", "out_degree", "in_degree", "defined"):
            table[f"{prefix}_{column}"] = frame[column].to_numpy()
    return table


def by_shape(table: pd.DataFrame) -> pd.DataFrame:
    """`compare`'s table with layers of the same shape (and so the same degrees) merged into one row."""
    shape_columns = [c for c in table.columns if c.endswith("_shape")]
    counts = table.groupby(shape_columns, sort=False)["layer"].agg(["count", "first"]).reset_index()
    merged = table.drop_duplicates(subset=shape_columns).drop(columns="layer")
    merged.insert(0, "layers", [f"{first} (+{count - 1})" if count > 1 else first
                                for first, count in zip(counts["first"], counts["count"])])
    return merged


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    lines = [header, "|" + "---|" * len(table.columns)]
    for row in table.itertuples(index=False):
        cells = [f"{v:.3g}" if isinstance(v, float) else ("yes" if v is True else "no" if v is False else str(v))
                 for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--paper-width", type=int, default=64)
    parser.add_argument("--paper-density", type=float, default=0.01)
    parser.add_argument("--rule", choices=("erk", "uniform"), default="erk")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--by-shape", action="store_true", help="one row per layer shape")
    args = parser.parse_args(argv)
    density = degree_matched_density(args.paper_density, args.paper_width, args.width)
    print(f"{args.model}: width {args.paper_width} at density {args.paper_density} ~ width {args.width} at density "
          f"{density:g} ({args.rule} layer densities)\n")
    table = compare(args.model, args.width, args.paper_width, args.paper_density, args.rule, args.classes)
    print(to_markdown(by_shape(table) if args.by_shape else table))


if __name__ == "__main__":
    main()
