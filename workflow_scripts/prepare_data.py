"""Materialise a dataset as uint8 tensors (digits from scikit-learn; CIFAR through torchvision)."""

import argparse

from fullspectrum import cli, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, choices=sorted(data.DATASETS))
    parser.add_argument("--root", default="data", help="where CIFAR archives are (or are downloaded to)")
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--no-verify", action="store_true", help="skip torchvision's MD5 check")
    parser.add_argument("--split-seed", type=int, default=None, help="digits: draw this seed's own stratified split")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    summary = data.prepare(args.dataset, args.out, root=args.root, download=args.download, verify=not args.no_verify,
                           split_seed=args.split_seed)
    print(f"prepared {summary['dataset']}: {summary['train']} train / {summary['test']} test images, "
          f"{summary['classes']} classes -> {args.out}")


if __name__ == "__main__":
    cli.run(main)
