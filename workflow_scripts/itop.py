"""ITOP dynamic sparse training from an ERK mask on the seed's initialisation; writes the snapshot tickets."""

import argparse

from fullspectrum import cli, data, devices, itop, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", required=True, help="the seed's initialisation (pretraining checkpoint @0)")
    parser.add_argument("--data", required=True, help="prepared dataset (.pt)")
    parser.add_argument("--itop", type=cli.json_arg, required=True,
                        help="ITOP settings as JSON: density, epochs, update_frequency, death_rate, snapshot_every")
    parser.add_argument("--train", type=cli.json_arg, required=True, help="training settings as JSON")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--snapshots", type=int, required=True, help="number of snapshots the workflow expects")
    devices.add_arguments(parser)
    parser.add_argument("--out-dir", required=True, help="the ITOP run's directory (snap{k}/ and itop.json)")
    args = parser.parse_args()
    settings = args.itop
    dataset = data.DeviceData(args.data, devices.from_args(args))
    cfg = train.TrainConfig.from_mapping(args.train, epochs=settings["epochs"])
    summary = itop.run_itop(weights=args.weights, data=dataset, cfg=cfg, density=settings["density"],
                            update_frequency=settings["update_frequency"], death_rate=settings["death_rate"],
                            snapshot_every=settings["snapshot_every"], seed=args.seed, out_dir=args.out_dir,
                            expected_snapshots=args.snapshots, config_used={"itop": settings, "train": args.train})
    print(f"ITOP {summary['model']} on {summary['dataset']} (seed {args.seed}): {len(summary['updates'])} updates, "
          f"{len(summary['snapshots'])} snapshots, exploration {summary['final_exploration']:.3f}, "
          f"final acc of the dynamic run {summary['train']['final_acc']:.2f}% -> {args.out_dir}")


if __name__ == "__main__":
    cli.run(main)
