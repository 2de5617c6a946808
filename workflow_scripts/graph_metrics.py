"""Per-layer graph metrics (fullspectrum.graph.model_metrics) of a mask on the weights it was made from, as CSV."""

import argparse
import time

from fullspectrum import cli, graph, io, masks, models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mask", required=True, help="mask file (fullspectrum.masks format)")
    parser.add_argument("--weights", required=True, help="weights file (fullspectrum.models format)")
    parser.add_argument("--out", required=True, help="CSV to write: one row per prunable layer, then model_mean")
    args = parser.parse_args()
    started = time.perf_counter()
    model, _ = models.load_weights(args.weights)
    mask, _ = masks.load_mask_file(args.mask, model)
    table = graph.model_metrics(model, mask)
    io.write_csv(table, args.out)
    mean = table.iloc[-1]
    print(f"graph metrics of {len(table) - 1} layers at density {mean['density']:.5f}: delta_r_imdb "
          f"{mean['delta_r_imdb']:.4f}, lambda_imdb {mean['lambda_imdb']:.4f}, l2 {mean['l2']:.4f} -> {args.out} "
          f"in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    cli.run(main)
