"""Assemble one of Tables 1-3 (CSV, Markdown, LaTeX, HTML) from the trained masks' results."""

import argparse
import math

from fullspectrum import cli, io, workflow
from fullspectrum.analysis import tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="table1, table2 or table3")
    parser.add_argument("--config", type=cli.json_arg, required=True, help="the workflow config as JSON")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--markdown", required=True)
    parser.add_argument("--latex", required=True)
    parser.add_argument("--html", help="the two tables rendered for Snakemake's report")
    args = parser.parse_args()
    config, name = args.config, args.name
    table_cfg = config["tables"][name]
    steps_per_epoch = math.ceil(workflow.TRAIN_SIZES[table_cfg["dataset"]] / config["pretrain"]["batch_size"])
    cells = tables.assemble(name, table_cfg, workflow.table_sources(config, name), config["train"]["epochs"],
                            steps_per_epoch, tables.load_reported(), width=config["model_width"])
    caption = tables.caption(name, table_cfg, config)
    io.write_csv(cells, args.csv)
    io.write_text(tables.to_markdown(cells, caption), args.markdown)
    io.write_text(tables.to_latex(cells, caption, label=f"tab:{name}"), args.latex)
    if args.html:
        io.write_text(tables.to_html(cells, caption, title=f"Table {name.removeprefix('table')}"), args.html)
    print(tables.to_markdown(cells, caption))


if __name__ == "__main__":
    cli.run(main)
