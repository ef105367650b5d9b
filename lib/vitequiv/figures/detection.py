"""Figures of detection and defenses (notebook 08):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations
