"""Figures of models and layers (notebook 07):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations
