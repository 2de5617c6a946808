"""Gather the trained metrics and graph metrics of several mask directories into one JSON (e.g. a PAGS selection)."""

import argparse
from pathlib import Path

from fullspectrum import cli, io
from fullspectrum.analysis.collect import collect_mask_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--equal-density", action="store_true",
                        help="read the equal-density selections (equal{k}, else select{k}) out as well")
    parser.add_argument("inputs", nargs="+", help="metrics.json and graph.csv files")
    args = parser.parse_args()
    dirs = sorted({str(Path(p).parent) for p in args.inputs})
    results = collect_mask_results(dirs, equal_density=args.equal_density)
    io.write_json(results, args.out)
    print(f"collected {len(results['masks'])} trained masks -> {args.out}")


if __name__ == "__main__":
    cli.run(main)
