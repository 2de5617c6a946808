"""One round of LTH: train from the initialisation (round 1) or the rewind point with the previous round's mask,
then prune by magnitude; round 1 also writes the rewind point."""

import argparse

from fullspectrum import baselines, cli, data, devices, runs, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", required=True,
                        help="round 1: the seed's initialisation; later rounds: the rewind point (weights files)")
    parser.add_argument("--prev-mask", default=None, help="mask of the previous round (omit for round 1)")
    parser.add_argument("--data", required=True, help="prepared dataset (.pt)")
    parser.add_argument("--round", type=int, required=True, help="1-based round number")
    parser.add_argument("--density", type=float, required=True, help="the run's target density")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--lth", type=cli.json_arg, required=True, help='{"prune_fraction": p, ...} as JSON')
    parser.add_argument("--train", type=cli.json_arg, required=True,
                        help="training settings of one round as JSON (epochs = lth.round_epochs)")
    devices.add_arguments(parser)
    parser.add_argument("--out-mask", required=True)
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-rewind", default=None,
                        help="round 1 only: where to write the rewind point (weights after lth.rewind_epoch epochs)")
    parser.add_argument("--out-graph", required=True, help="graph.csv of the new mask on the rewind weights")
    args = parser.parse_args()
    dataset = data.DeviceData(args.data, devices.from_args(args))
    cfg = train.TrainConfig.from_mapping(args.train)
    record = baselines.lth_round(
        weights=args.weights, prev_mask=args.prev_mask or None, round_index=args.round, target_density=args.density,
        prune_fraction=float(args.lth["prune_fraction"]), data=dataset, cfg=cfg, seed=args.seed,
        out_mask=args.out_mask, out_json=args.out_json, rewind_epoch=int(args.lth["rewind_epoch"]),
        out_rewind=args.out_rewind, config_used={"lth": args.lth, "train": args.train})
    print(f"LTH round {record['round']}/{record['rounds']}: trained at density {record['trained_density']:.4f} "
          f"-> acc {record['final_acc']:.2f}%; pruned to {record['density']:.4f} "
          f"(target {record['target_density']:.4f}) -> {args.out_mask}")
    rewind = args.out_rewind or args.weights  # round 1 has just written the rewind point; later rounds start there
    print(runs.graph_metrics(weights=rewind, mask=args.out_mask, out=args.out_graph))


if __name__ == "__main__":
    cli.run(main)
