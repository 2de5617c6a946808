"""Copy one member's metrics.json and graph.csv from the chunk that trained it into its own mask directory (an
error naming the cause if it diverged there)."""

import argparse

from fullspectrum import chunk_files, cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunk", required=True, help="the chunk's folder")
    parser.add_argument("--name", required=True, help="the member's name in the chunk (its mask directory's leaf)")
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--graph", required=True)
    args = parser.parse_args()
    chunk_files.publish_member(args.chunk, args.name, args.metrics, args.graph)
    print(f"{args.name}: trained in {args.chunk} (its log: {args.chunk}.log) -> {args.metrics}, {args.graph}")


if __name__ == "__main__":
    cli.run(main)
