"""PAGS/PEGS mask search from a weights file and its PaI baseline mask; writes the selected masks and the log."""

import argparse
import functools
import shutil
import time
from pathlib import Path

import pandas as pd

from fullspectrum import cli, data, devices, io, masks, models, pruning, search, train
from fullspectrum.provenance import provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", required=True, help="the checkpoint searched on (@0: PAGS, @N: PEGS)")
    parser.add_argument("--baseline", required=True, help="the PaI mask made with full scoring data")
    parser.add_argument("--data", required=True)
    parser.add_argument("--search", type=cli.json_arg, required=True,
                        help="search settings as JSON (fullspectrum.search.SearchConfig's fields)")
    parser.add_argument("--control", action="store_true",
                        help="also write the no-criterion control: the first K candidates, K = masks selected")
    parser.add_argument("--equal-density", action="store_true",
                        help="also write each selected mask trimmed or topped up to the baseline's weight count "
                             "(by the baseline method's scores) where its count differs")
    devices.add_arguments(parser)
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()
    started = time.perf_counter()
    device = devices.from_args(args)
    model, weights_meta = models.load_weights(args.weights)
    model.to(device)
    baseline, base_meta = masks.load_mask_file(args.baseline, model)
    cfg = search.SearchConfig(**args.search)
    out = Path(args.out)
    workdir = out.parent / f".{out.name}_work"  # outside the output directory, which Snakemake clears
    dataset = data.DeviceData(args.data, device)
    result = search.pags(model, base_meta["method"], base_meta["target_density"], dataset, cfg, base_meta["seed"],
                         baseline=baseline, workdir=workdir)
    algorithm = "PAGS" if weights_meta["iters"] == 0 else "PEGS"
    method, seed = base_meta["method"], base_meta["seed"]

    def save(name: str, mask: masks.Masks, **fields) -> str:
        meta = masks.build_meta(mask, method=method, target_density=base_meta["target_density"], seed=seed,
                                model=base_meta["model"], dataset=base_meta["dataset"], source=args.weights,
                                pretrain_iters=weights_meta["iters"], baseline_mask=args.baseline, **fields)
        masks.save_mask_file(out / name, mask, meta)
        return name

    selected_files = [save(f"select{s.index}.pt", s.load(), search=algorithm, snapshot=s.index,
                           after_candidates=s.after_candidates) for s in result.selected]
    control_files = []
    if args.control:
        drawn = search.control_masks(model, method, base_meta["target_density"], dataset, cfg, seed,
                                     len(result.selected))
        control_files = [save(f"control{index}.pt", control, control=True, candidate=index)
                         for index, control in enumerate(drawn, start=1)]
    equal_files = []
    if args.equal_density:  # the baseline's scores, on the data the baseline was scored on
        baseline_scores = functools.cache(lambda: pruning.scores(model, method, dataset.method_batches(
            method, base_meta.get("scoring_batches"), base_meta.get("batch_size"), seed,
            base_meta.get("scoring_augment")), seed))
        for snapshot in result.selected:
            adjusted = search.equal_density(snapshot.load(), baseline, baseline_scores)
            if adjusted is not None:
                equal_files.append(save(f"equal{snapshot.index}.pt", adjusted, search=algorithm,
                                        snapshot=snapshot.index, equal_density=True,
                                        selected_density=snapshot.density))
    columns = ["candidate", "seed", "layer", *search.LOGGED_KEYS, "accepted", "identical"]
    io.write_csv(pd.DataFrame(result.log, columns=columns), out / "candidates.csv")
    summary = {**result.summary, "algorithm": algorithm, "method": method,
               "target_density": base_meta["target_density"], "weights": args.weights, "baseline": args.baseline,
               "selected_files": selected_files, "control_files": control_files,
               "equal_density": args.equal_density, "equal_files": equal_files,
               "provenance": provenance(config=args.search, device=train.describe_device(device),
                                        wall_seconds=time.perf_counter() - started)}
    io.write_json(summary, out / "summary.json")
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"{algorithm} {method}: {summary['candidates_done']} candidates, "
          f"{summary['layers_accepted']} layers accepted, {len(result.selected)} selected, explored "
          f"{summary['explored_share']:.1%} of the weights in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    cli.run(main)
