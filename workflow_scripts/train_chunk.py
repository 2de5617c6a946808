"""Train a chunk of masks in one process (a search's selections or an ITOP run's tickets, train.members at most):
each member's graph.csv and metrics.json, and chunk.json, written into the chunk's folder (--out)."""

import argparse

from fullspectrum import chunk, cli, data, devices, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=cli.json_arg, required=True,
                        help='the members as JSON: [{"name": ..., "mask": ..., "weights": ...}, ...]')
    parser.add_argument("--data", required=True)
    parser.add_argument("--train", type=cli.json_arg, required=True,
                        help="training settings as JSON (mode: sequential or fused)")
    parser.add_argument("--seed", type=int, required=True, help="data-order seed (the run's seed)")
    devices.add_arguments(parser)
    parser.add_argument("--out", required=True, help="the chunk's folder")
    args = parser.parse_args()
    members = [chunk.Member(**member) for member in args.members]
    dataset = data.DeviceData(args.data, devices.from_args(args))
    summary = chunk.train_chunk(members, data=dataset, cfg=train.TrainConfig.from_mapping(args.train), seed=args.seed,
                                mode=args.train.get("mode", "sequential"), out=args.out,
                                config_used={"train": args.train})
    diverged = [name for name, member in summary["members"].items() if member["diverged"]]
    print(f"trained {len(members) - len(diverged)} of {len(members)} masks ({summary['mode']}) in "
          f"{summary['wall_seconds']:.0f} s -> {args.out}" + (f"; diverged: {', '.join(diverged)}" if diverged else ""))


if __name__ == "__main__":
    cli.run(main)
