"""Figures of the local normal space (notebook 03):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations
