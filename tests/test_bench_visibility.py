"""The visibility benchmark's reading of its frontier: up to which stop cosine the median pair is invisible."""
import math

import pandas as pd
import pytest

from benchmarks.bench_visibility import _invisible_at


def curve(points: dict[float, float]) -> pd.Series:
    return pd.Series(points, name="butteraugli").rename_axis("stop cos")


def test_the_edge_is_interpolated_between_the_last_invisible_and_the_first_visible_cosine():
    assert _invisible_at(curve({0.3: 0.2, 0.6: 0.8, 0.9: 1.4, 0.99: 3.0})) == pytest.approx(0.6 + 0.3 * 0.2 / 0.6)


def test_visible_at_every_measured_cosine_has_no_edge():
    assert math.isnan(_invisible_at(curve({0.3: 1.1, 0.9: 2.0, 0.99: 3.0})))


def test_invisible_at_every_measured_cosine_reaches_the_last_one():
    assert _invisible_at(curve({0.3: 0.0, 0.9: 0.5, 0.99: 1.0})) == 0.99
