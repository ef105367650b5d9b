"""Run every ``benchmarks/bench_*.py`` and print each figure with its baseline and ratio.

Each module exposes ``main() -> list[Row]``. Exit status is 1 if any target is missed.
Select modules with arguments: ``python -m benchmarks matching``.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import torch


def main(argv: list[str]) -> int:
    torch.manual_seed(0)
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, torch threads: {torch.get_num_threads()}")
    print(f"{'benchmark':58s} {'value':>11s} {'baseline':>11s} {'ratio':>7s}  target")
    failed = 0
    for name in names:
        for row in importlib.import_module(f"benchmarks.{name}").main():
            failed += not row.ok
            mark = "ok" if row.ok else "MISSED"
            print(f"{row.name:58s} {row.value:9.4g}{row.unit:>2s} {row.baseline:9.4g}{row.unit:>2s} "
                  f"{row.ratio:7.3f}  {row.target} [{mark}]", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
