"""Figures of piecewise linear subspaces (notebook 04):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations
