"""The study's verdict: the pre-registered comparisons over seeds and Figures 1-2's claim (README, "The study")."""

import argparse
from pathlib import Path

from fullspectrum import cli, workflow
from fullspectrum.analysis import study
from fullspectrum.io import read_csv, write_csv, write_json, write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baselines", nargs="+", required=True, help="each run's PaI mask metrics.json")
    parser.add_argument("--searches", nargs="+", required=True, help="each run's pags/results.json, same order")
    parser.add_argument("--tickets", required=True, help="the ITOP figure's per-ticket CSV")
    parser.add_argument("--settings", type=cli.json_arg, required=True, help="the config's `study` as JSON")
    parser.add_argument("--markdown", required=True)
    parser.add_argument("--csv", required=True, help="the verdict table")
    parser.add_argument("--seeds-csv", required=True, help="the per-seed values and differences behind it")
    parser.add_argument("--json", required=True)
    parser.add_argument("--png", required=True)
    args = parser.parse_args()
    if len(args.baselines) != len(args.searches):
        raise ValueError("--baselines and --searches must list the same runs")
    runs = []
    for baseline, search in zip(args.baselines, args.searches):
        if Path(search).parent.parent != Path(baseline).parent.parent:  # {run}/pai/... and {run}/pags/...
            raise ValueError(f"{baseline} and {search} are not the same run")
        run = workflow.parse_mask_dir(str(Path(baseline).parent))
        runs.append({"method": run["method"], "seed": run["seed"], "baseline": baseline, "search": search})
    settings = args.settings
    values = study.seed_values(runs)
    diffs = study.differences(values)
    table = study.analyse(diffs, sesoi=settings["sesoi"], alpha=settings["alpha"], min_seeds=settings["min_seeds"])
    itop = study.itop_claim(read_csv(args.tickets, required_columns=("accuracy",), what="ITOP tickets"))
    write_csv(table, args.csv, index=False)
    write_csv(values.merge(diffs.pivot_table(index=["method", "seed"], columns="comparison", values="difference")
                           .reset_index(), on=["method", "seed"]), args.seeds_csv, index=False)
    curves = study.baseline_curves(runs)
    write_json({"settings": settings, "verdicts": table.to_dict("records"), "itop": itop,
                "baseline_curves": curves.to_dict("records"),
                "per_seed": values.to_dict("records"), "differences": diffs.to_dict("records")}, args.json)
    study.plot_differences(diffs, table, args.png)
    write_text(study.to_markdown(table, values, itop, settings, curves), args.markdown)
    print("\n".join(study.verdict_lines(table)))


if __name__ == "__main__":
    cli.run(main)
