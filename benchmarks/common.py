"""Shared helpers for the benchmarks: timing and the row each benchmark reports."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Row:
    """One measured figure, with the baseline it is compared against in the same process."""

    name: str
    value: float  # seconds, bytes or rate of the thing measured
    baseline: float  # the same quantity for the baseline
    target: str  # e.g. "ratio <= 1.15"
    ok: bool
    unit: str = "s"

    @property
    def ratio(self) -> float:
        return self.value / self.baseline


def best_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)
