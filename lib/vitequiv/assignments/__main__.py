"""``python -m vitequiv.assignments generate [--out DIR]`` writes the student copies (``make student``);
``python -m vitequiv.assignments check`` exits 1 if a committed student copy is out of date."""
import argparse
import sys
from pathlib import Path

from .generate import generate, stale, student_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitequiv.assignments", description=__doc__.split(";")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate", help="write the student copies of notebooks/assignments/NN_*.ipynb")
    make.add_argument("--out", type=Path, default=None, help=f"output folder (default: {student_dir()})")
    commands.add_parser("check", help="fail if a committed student copy differs from a fresh generation")
    args = parser.parse_args(argv)
    if args.command == "generate":
        for path in generate(args.out):
            print(f"wrote {path}")
        return 0
    outdated = stale()
    if outdated:
        print(f"out of date: {', '.join(outdated)}; run `make student`", file=sys.stderr)
        return 1
    print("student copies are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
