"""The suite as a browsable, offline HTML book, built from the executed notebooks of the last ``make figures`` run.

This module is the command line only; :mod:`vitequiv.run.book` builds the book.

    python -m vitequiv.book                                # figures/ -> figures/_book/
    python -m vitequiv.book --figures /tmp/run --out /tmp/book
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .run.book import build
from .run.book_run import BookError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitequiv.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--figures", type=Path, default=None, help="the run to show (default: figures/)")
    parser.add_argument("--out", type=Path, default=None, help="where the site goes (default: <figures>/_book/)")
    args = parser.parse_args(argv)
    try:
        out = build(args.figures, args.out)
    except BookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # Sphinx failed; the previous book, if any, is still there
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Book written to {out}/index.html; view it with: python -m http.server -d {out}  "
          "(then open http://127.0.0.1:8000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
