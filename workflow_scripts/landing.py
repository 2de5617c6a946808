"""The landing page of Snakemake's report (fullspectrum.landing) from the config and the tables made so far
(under the config's results folder), and for a study its verdict (study.csv)."""

import argparse

from fullspectrum import cli, io, landing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=cli.json_arg, required=True, help="the workflow config as JSON")
    parser.add_argument("--out", required=True, help="the page, reStructuredText")
    parser.add_argument("--study-csv", help="the study's verdict table (study.csv), shown on the page")
    args = parser.parse_args()
    extra = landing.study_section(args.config, args.study_csv) if args.study_csv else ""
    io.write_text(landing.landing_page(args.config, args.config["results"], extra=extra), args.out)


if __name__ == "__main__":
    cli.run(main)
