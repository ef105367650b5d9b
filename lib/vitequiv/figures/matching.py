"""Figures of embedding matching and equivalence classes (notebooks 01 and 02):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations
