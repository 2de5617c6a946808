"""Assemble an LTH run: the per-round table, the ticket (the last round's mask) and the search cost."""

import argparse

from fullspectrum import baselines, cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", nargs="+", required=True, help="every round's round.json")
    parser.add_argument("--last-mask", required=True, help="the last round's mask.pt")
    parser.add_argument("--out-csv", required=True)
    parser.add_argument("--out-ticket", required=True)
    parser.add_argument("--out-cost", required=True)
    args = parser.parse_args()
    cost = baselines.lth_summary(round_jsons=args.rounds, last_mask=args.last_mask, out_csv=args.out_csv,
                                 out_ticket=args.out_ticket, out_cost=args.out_cost)
    print(f"LTH: {cost['rounds']} rounds, {cost['search_epochs']} epochs; ticket density {cost['density']:.4f} "
          f"-> {args.out_ticket}")


if __name__ == "__main__":
    cli.run(main)
