"""Write a CIFAR-10-shaped tree of random images in the official python-pickle layout (cifar-10-batches-py).

    python benchmarks/synthetic_cifar.py --root results/gpu_check/data --train 5000 --test 1000

For benchmarks/gpu_check.sh: the workflow then runs on `cifar10` with `data: {verify_checksums: false}` exactly as on
the real archive (torchvision's loader, the 32x32 RGB shape, 10 classes), without downloading anything. The labels are
random, so accuracies mean nothing; speeds and the pipeline do.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np


def write_tree(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)

    def batch(n: int) -> bytes:
        return pickle.dumps({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                             "labels": rng.integers(0, 10, n).tolist()})

    for index in range(1, 6):  # CIFAR-10's five training batches
        (base / f"data_batch_{index}").write_bytes(batch(n_train // 5))
    (base / "test_batch").write_bytes(batch(n_test))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the config's data.root")
    parser.add_argument("--train", type=int, default=5000, help="training images (a multiple of 5)")
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args()
    folder = write_tree(Path(args.root), args.train, args.test)
    print(f"synthetic CIFAR-10: {args.train} + {args.test} random images in {folder}")


if __name__ == "__main__":
    main()
