"""Figure 1/2: test accuracy of the trained ITOP snapshot tickets against topology, weights and full spectrum."""

import argparse
from pathlib import Path

from fullspectrum import cli
from fullspectrum.analysis import figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", nargs="+", required=True, help="each ticket's metrics.json")
    parser.add_argument("--graphs", nargs="+", required=True, help="each ticket's graph.csv (beside metrics.json)")
    parser.add_argument("--title", default="")
    parser.add_argument("--png", required=True)
    parser.add_argument("--pdf", required=True)
    parser.add_argument("--data", required=True, help="CSV of the plotted per-ticket values")
    parser.add_argument("--corr-csv", required=True)
    parser.add_argument("--corr-json", required=True)
    args = parser.parse_args()
    tickets = [Path(m).parent for m in args.metrics]
    if sorted(tickets) != sorted(Path(g).parent for g in args.graphs):
        raise ValueError("--metrics and --graphs must name the same ticket directories")
    summary = figures.make_figure(tickets, png=args.png, pdf=args.pdf, data_csv=args.data,
                                  corr_csv=args.corr_csv, corr_json=args.corr_json, title=args.title)
    for record in summary["correlations"]:
        print(f"{record['panel']:>14}: rho = {record['rho']}, p = {record['p']} (n = {record['n']}) {record['note']}")
    print(f"{summary['tickets']} tickets -> {args.png}")


if __name__ == "__main__":
    cli.run(main)
