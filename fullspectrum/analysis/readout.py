"""The authors' readout of a PAGS/PEGS cell (ScottHoang/dst-ram-pruning, `lth_acc_readout.py`).

Every trained mask records the test accuracy of its final epoch and of its best epoch (`metrics.json`). The
authors report best-epoch accuracy (their checkpoint of the best epoch on the validation loader, which is the test
loader): optimistic, since the epoch is chosen on the data it is scored on. Their readout of one search:

- baseline: the PaI mask's accuracy;
- best: the highest accuracy over the trained snapshots (the baseline excluded);
- avg ± std: over the snapshots at least as good as the baseline when more than one is, otherwise over all
  snapshots; std is the sample standard deviation (ddof = 1, torch's default), undefined for one value.

The same readout of final-epoch accuracies is kept beside it.
"""

from __future__ import annotations

import statistics
from typing import Sequence


def authors_readout(baseline: float, snapshots: Sequence[float]) -> dict:
    """best, avg, std and how many snapshots the avg pools (`n_avg`) out of `n`, as the authors read a search."""
    values = [float(v) for v in snapshots]
    if not values:
        return {"best": None, "avg": None, "std": None, "n": 0, "n_avg": 0}
    at_least_baseline = [v for v in values if v >= baseline]
    pooled = at_least_baseline if len(at_least_baseline) > 1 else values
    return {"best": max(values), "avg": statistics.fmean(pooled),
            "std": statistics.stdev(pooled) if len(pooled) > 1 else None, "n": len(values), "n_avg": len(pooled)}
