"""Train a mask from the weights it was made from; write metrics.json (final- and best-epoch test accuracy and
more) and, first, graph.csv (the mask's per-layer graph metrics on those weights)."""

import argparse
from pathlib import Path

from fullspectrum import cli, data, devices, runs, train, workflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mask", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--train", type=cli.json_arg, required=True, help="training settings as JSON")
    parser.add_argument("--seed", type=int, default=None, help="data-order seed (default: the run's seed)")
    devices.add_arguments(parser)
    parser.add_argument("--out", required=True, help="metrics.json to write")
    parser.add_argument("--graph", required=True, help="graph.csv to write")
    args = parser.parse_args()
    # the metrics go into the mask directory (a search's mask is read from the search's output)
    seed = args.seed if args.seed is not None else workflow.parse_mask_dir(str(Path(args.out).parent))["seed"]
    print(runs.graph_metrics(weights=args.weights, mask=args.mask, out=args.graph))
    dataset = data.DeviceData(args.data, devices.from_args(args))
    cfg = train.TrainConfig.from_mapping(args.train)
    metrics = runs.train_mask(weights=args.weights, mask=args.mask, data=dataset, cfg=cfg, seed=seed, out=args.out,
                              config_used={"train": args.train})
    print(f"trained {args.mask}: final acc {metrics['final_acc']:.2f}% (best {metrics['best_acc']:.2f}%), "
          f"density {metrics['density']:.4f}, {metrics['images_per_second']:.0f} img/s on {metrics['device']}")


if __name__ == "__main__":
    cli.run(main)
