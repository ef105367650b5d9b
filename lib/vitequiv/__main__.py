"""Command line: ``python -m vitequiv weights [--force]`` builds or checks the embedded DINOv2-S/14 weights.

The notebooks run with ``python -m vitequiv.runner`` (see its ``--help``).
"""
import argparse
import sys

from .weights import WeightsUnavailableError, build_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitequiv")
    commands = parser.add_subparsers(dest="command", required=True)
    weights = commands.add_parser("weights", help="build (or check) the embedded DINOv2-S/14 weights in data/")
    weights.add_argument("--force", action="store_true", help="rebuild even if an intact copy exists")
    args = parser.parse_args(argv)
    try:
        print(f"embedded weights ready: {build_weights(force=args.force)}")
    except WeightsUnavailableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
