"""Figures of local directional Lipschitz estimates (notebook 05):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations
