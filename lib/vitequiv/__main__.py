"""Command line: ``python -m vitequiv weights [--force | --check]`` builds or checks the embedded DINOv2-S/14 weights.

The notebooks run with ``python -m vitequiv.runner`` (see its ``--help``).
"""
import argparse
import sys

from .paths import LocationError, data_dir
from .weights import (
    REBUILD,
    WeightsUnavailableError,
    architecture_problem,
    build_weights,
    weights_path,
    weights_problem,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitequiv")
    commands = parser.add_subparsers(dest="command", required=True)
    weights = commands.add_parser("weights", help="build (or check) the embedded DINOv2-S/14 weights in data/")
    mode = weights.add_mutually_exclusive_group()
    mode.add_argument("--force", action="store_true", help="rebuild even if an intact copy exists")
    mode.add_argument("--check", action="store_true",
                      help="only verify the checksum and the tensors' names and shapes; exit 1 if not intact")
    args = parser.parse_args(argv)
    try:
        data_dir()
    except LocationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    problem = weights_problem()
    mismatch = architecture_problem(weights_path()) if problem is None else None
    if mismatch and not args.force:
        print(f"error: embedded weights {weights_path()} {mismatch}; rebuild them with `{REBUILD}`",
              file=sys.stderr)
        return 1
    if args.check:
        print(f"embedded weights {weights_path()} {problem or 'are intact'}",
              file=sys.stderr if problem else sys.stdout)
        return 1 if problem else 0
    if problem or args.force:
        print(f"building: the embedded weights {weights_path()} {problem or 'are rebuilt (--force)'}")
    try:
        print(f"embedded weights ready: {build_weights(force=args.force)}")
    except WeightsUnavailableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
