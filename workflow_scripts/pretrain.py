"""Dense pretraining from the seed's initialisation for a number of iterations (0 = the initialisation)."""

import argparse

from fullspectrum import cli, data, devices, models, runs, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (.pt)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--iters", type=int, required=True)
    parser.add_argument("--init", choices=models.INITS, default="authors",
                        help="the initialisation this checkpoint starts from")
    parser.add_argument("--outputs", type=int, default=None,
                        help="the classifier's outputs (default: one per class; the authors: 100 for CIFAR)")
    parser.add_argument("--no-head-bias", dest="head_bias", action="store_false", help="a bias-free classifier")
    parser.add_argument("--pretrain", type=cli.json_arg, required=True, help="SGD settings as JSON")
    devices.add_arguments(parser)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    device = devices.from_args(args) if args.iters > 0 else "cpu"
    dataset = data.DeviceData(args.data, device)
    cfg = train.TrainConfig.from_mapping(args.pretrain)
    meta = runs.pretrain(model=args.model, width=args.width, dataset=args.dataset, data=dataset, iters=args.iters,
                         seed=args.seed, cfg=cfg, init=args.init, outputs=args.outputs, head_bias=args.head_bias,
                         out=args.out)
    print(f"pretrained {args.model}@{args.iters} (seed {args.seed}, init {args.init}, {meta['num_classes']} outputs, "
          f"{'with' if args.head_bias else 'no'} classifier bias) -> {args.out}; "
          f"{meta['provenance']['wall_seconds']:.1f} s on {meta['provenance']['device']}")


if __name__ == "__main__":
    cli.run(main)
