"""Early-Bird (unstructured): dense training until the per-epoch magnitude masks stop changing; draw the ticket."""

import argparse

from fullspectrum import baselines, cli, data, devices, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", required=True, help="starting weights (a pretraining checkpoint)")
    parser.add_argument("--data", required=True, help="prepared dataset (.pt)")
    parser.add_argument("--density", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--early-bird", type=cli.json_arg, required=True, help='{"window": w, "threshold": t, ...}')
    parser.add_argument("--train", type=cli.json_arg, required=True,
                        help="dense training settings as JSON (epochs = early_bird.epochs, the budget)")
    devices.add_arguments(parser)
    parser.add_argument("--out-mask", required=True)
    parser.add_argument("--out-weights", required=True)
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-cost", required=True)
    args = parser.parse_args()
    dataset = data.DeviceData(args.data, devices.from_args(args))
    cfg = train.TrainConfig.from_mapping(args.train)
    record = baselines.early_bird(
        weights=args.weights, data=dataset, cfg=cfg, density=args.density, window=int(args.early_bird["window"]),
        threshold=float(args.early_bird["threshold"]), seed=args.seed, out_mask=args.out_mask,
        out_weights=args.out_weights, out_json=args.out_json, out_cost=args.out_cost,
        config_used={"early_bird": args.early_bird, "train": args.train})
    how = "converged" if record["drawn_early"] else "not converged, drawn at the last epoch"
    print(f"Early-Bird ticket drawn at epoch {record['draw_epoch']}/{record['budget_epochs']} ({how}); "
          f"density {record['density']:.4f} -> {args.out_mask}")


if __name__ == "__main__":
    cli.run(main)
