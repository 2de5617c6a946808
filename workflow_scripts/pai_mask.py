"""Make a pruning-at-initialisation mask from a weights file; write the mask file and its per-layer densities."""

import argparse
import logging
import time

import pandas as pd

from fullspectrum import cli, data, devices, io, masks, models, pruning, train
from fullspectrum.provenance import provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--method", required=True, choices=pruning.METHODS)
    parser.add_argument("--density", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--pai", type=cli.json_arg, required=True,
                        help='{"scoring_batches": N or "all", "batch_size": B, "augment": bool} for SNIP/GraSP; '
                             '{} for data-free methods')
    devices.add_arguments(parser)
    parser.add_argument("--out", required=True)
    parser.add_argument("--layers", required=True, help="per-layer density table (CSV)")
    args = parser.parse_args()
    started = time.perf_counter()
    device = devices.from_args(args)
    model, weights_meta = models.load_weights(args.weights)
    model.to(device)
    dataset = data.DeviceData(args.data, device)
    batches = dataset.method_batches(args.method, args.pai.get("scoring_batches"), args.pai.get("batch_size"),
                                     seed=args.seed, augment=args.pai.get("augment"))
    mask = pruning.make_mask(model, args.method, args.density, batches=batches, seed=args.seed)
    meta = masks.build_meta(
        mask, method=args.method, target_density=args.density, seed=args.seed, model=weights_meta["model"],
        dataset=weights_meta["dataset"], source=args.weights, pretrain_iters=weights_meta["iters"],
        scoring_batches=args.pai.get("scoring_batches"), batch_size=args.pai.get("batch_size"),
        scoring_augment=args.pai.get("augment"),
        provenance=provenance(device=train.describe_device(device), wall_seconds=time.perf_counter() - started))
    if meta["empty_layers"]:
        logging.warning("layer collapse: %s kept no weight", ", ".join(meta["empty_layers"]))
    table = pd.DataFrame([{"layer": name, "shape": "x".join(map(str, m.shape)), "weights": m.numel(),
                           "kept": int(m.sum()), "density": float(m.float().mean())} for name, m in mask.items()])
    io.write_csv(table, args.layers)
    masks.save_mask_file(args.out, mask, meta)
    print(f"{args.method} mask at density {meta['density']:.5f} (target {args.density}) -> {args.out} "
          f"in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    cli.run(main)
