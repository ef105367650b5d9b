"""Claims with evidence (issue 29): the verdict rule, the intervals (scipy's bootstrap and exact binomial), the
refusals, and Output.claim. Rendering of the records: tests/test_book.py, test_outputs.py, test_sweeps.py."""
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import vitequiv as vq
from vitequiv import claims, figures
from vitequiv.claims import Claim, Evidence

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
directions = st.sampled_from([">=", "<="])


def evidence(low: float, high: float, n: int = 7) -> Evidence:
    return Evidence("mean", (low + high) / 2, n, low, high, "test")


def claim(low: float, high: float, threshold: float, direction: str = ">=", n: int = 7) -> Claim:
    return Claim("the value clears the threshold", "paper", "ours", evidence=evidence(low, high, n),
                 threshold=threshold, direction=direction)


@st.composite
def intervals(draw):
    a, b = draw(finite), draw(finite)
    return min(a, b), max(a, b)


# ---- the verdict rule -----------------------------------------------------------------------------------------

@given(intervals(), finite, directions, st.integers(1, 10_000))
def test_an_interval_clear_of_the_threshold_decides_and_one_across_it_is_inconclusive(interval, threshold, direction,
                                                                                      n):
    low, high = interval
    verdict = claim(low, high, threshold, direction, n).verdict
    side = (lambda x: x >= threshold) if direction == ">=" else (lambda x: x <= threshold)
    if side(low) and side(high):  # every point of the interval on the claim's side
        assert verdict == "holds"
    elif not side(low) and not side(high):  # every point on the other side
        assert verdict == "not"
    else:
        assert verdict == f"inconclusive (n = {n})"


@given(intervals(), finite, st.integers(1, 100))
def test_the_rule_is_symmetric_in_its_direction(interval, threshold, n):
    low, high = interval
    assert claim(low, high, threshold, ">=", n).verdict == claim(-high, -low, -threshold, "<=", n).verdict


@given(intervals(), finite, directions)
def test_widening_an_interval_never_turns_a_verdict_around(interval, threshold, direction):
    low, high = interval
    narrow = claim(low, high, threshold, direction).verdict
    wide = claim(low - 1, high + 1, threshold, direction).verdict
    assert wide == narrow or wide.startswith("inconclusive")


@given(finite, finite, directions)
def test_an_exact_value_is_never_inconclusive(value, threshold, direction):
    found = Claim("s", "p", "o", evidence=claims.exact(value, 3), threshold=threshold, direction=direction).verdict
    holds = value >= threshold if direction == ">=" else value <= threshold
    assert found == ("holds" if holds else "not")


@given(st.lists(st.sampled_from(["holds", "not", "inconclusive"]), min_size=1, max_size=5), st.data())
def test_a_claim_with_parts(kinds, data):
    ns = data.draw(st.lists(st.integers(1, 50), min_size=len(kinds), max_size=len(kinds)))
    intervals_of = {"holds": (1.0, 2.0), "not": (-2.0, -1.0), "inconclusive": (-1.0, 1.0)}
    parts = tuple(claim(*intervals_of[k], 0.0, ">=", n) for k, n in zip(kinds, ns))
    whole = Claim("all parts hold", "p", "o", parts=parts)
    if all(k == "holds" for k in kinds):
        assert whole.verdict == "holds"
    elif all(k == "not" for k in kinds):
        assert whole.verdict == "not"
    elif "holds" in kinds:
        assert whole.verdict == "partly"
    else:
        assert whole.verdict == f"inconclusive (n = {min(ns)})"
    assert whole.n == min(ns)


def test_partly_only_for_claims_with_parts():
    single = [claim(low, high, 0.0).verdict for low, high in [(1, 2), (-2, -1), (-1, 1), (0, 0), (-1, 0)]]
    assert single == ["holds", "not", "inconclusive (n = 7)", "holds", "inconclusive (n = 7)"]
    assert claim(0, 1, 1, "<=").verdict == "holds" and claim(1.5, 2, 1, "<=").verdict == "not"


# ---- the intervals --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, n, low, high", [(1, 12, 0.0021, 0.3848), (0, 12, 0.0, 0.2646), (12, 12, 0.7354, 1.0),
                                             (6, 12, 0.2109, 0.7891)])
def test_the_exact_binomial_interval_is_clopper_pearson(k, n, low, high):
    found = claims.proportion([True] * k + [False] * (n - k))
    assert (found.statistic, found.value, found.n) == ("proportion", k / n, n)
    assert found.low == pytest.approx(low, abs=5e-5) and found.high == pytest.approx(high, abs=5e-5)
    scipy_ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert (found.low, found.high) == (scipy_ci.low, scipy_ci.high)
    assert "Clopper-Pearson" in found.method


@pytest.mark.parametrize("kept", [0, 1])
def test_the_machine_dependent_case_of_06_gets_one_verdict_on_both_cpus(kept):
    """Issue 29: 06's probe kept the source's class on 1 of 12 matched images on an Intel CPU with AMX and on 0 of
    12 on an AMD EPYC (bfloat16 rounding), which the old rule read as "partly" and "holds". Both intervals straddle
    the 5 % threshold, so the rule gives the same verdict on both machines."""
    found = Claim("On matched images the probe keeps the source's class at most 5 % of the time", "paper", "ours",
                  evidence=claims.proportion([True] * kept + [False] * (12 - kept)), threshold=0.05, direction="<=")
    assert found.verdict == "inconclusive (n = 12)"


def test_proportion_takes_flags_of_any_kind_and_refuses_fractions():
    assert claims.proportion(torch.tensor([True, False, True])).value == pytest.approx(2 / 3)
    assert claims.proportion(np.array([1, 0, 0, 0])).n == 4
    with pytest.raises(ValueError, match="booleans"):
        claims.proportion([0.5, 1.0])
    with pytest.raises(TypeError, match="one flag per item"):
        claims.proportion(0.5)
    with pytest.raises(ValueError, match="n >= 1"):
        claims.proportion([])


def test_the_mean_interval_is_scipys_bootstrap_and_seeded():
    values = np.random.default_rng(3).normal(size=20)
    found = claims.mean(values, seed=5)
    reference = stats.bootstrap((values,), np.mean, n_resamples=9_999, confidence_level=0.95, method="BCa",
                                rng=np.random.default_rng(5)).confidence_interval
    assert (found.low, found.high) == pytest.approx((reference.low, reference.high))
    assert found.value == pytest.approx(values.mean()) and found.n == 20 and found.low < found.value < found.high
    assert claims.mean(values, seed=5) == found, "the same seed gives the same interval"


@pytest.mark.parametrize("n, low_rank, high_rank", [(6, 1, 6), (8, 1, 8), (12, 3, 10), (24, 7, 18)])
def test_the_median_interval_is_two_order_statistics_with_95_percent_coverage(n, low_rank, high_rank):
    values = np.random.default_rng(n).normal(size=n)
    found, ordered = claims.median(values), np.sort(values)
    assert (found.low, found.high) == (ordered[low_rank - 1], ordered[high_rank - 1])
    assert found.value == np.median(values) and found.n == n and "order statistics" in found.method
    coverage = stats.binom.cdf(high_rank - 1, n, 0.5) - stats.binom.cdf(low_rank - 1, n, 0.5)
    assert coverage >= 0.95, "the interval holds the true median with at least 95 % probability"


def test_fewer_than_six_items_give_no_interval_and_an_inconclusive_verdict():
    """Issue 29: a bootstrap over two items gave their range (a 50 % interval), and 07's verdicts turned with the
    seed. The range of five items holds their median only 94 % of the time, so below six there is no interval."""
    assert claims.MIN_ITEMS == 6
    for values in ([0.129, 0.131], [0.254, 0.266], [1.0, 2.0, 3.0, 4.0, 5.0], [0.4], [2.0, 2.0]):
        for statistic in (claims.median, claims.mean):
            found = statistic(values)
            assert (found.low, found.high) == claims.UNBOUNDED and not found.bounded and found.n == len(values)
            assert "no 95 % interval" in found.method and "no 95 % interval" in found.text()
            made = Claim("the residual is small", "p", "o", evidence=found, threshold=0.15, direction="<=")
            assert made.verdict == f"inconclusive (n = {len(values)})"
            record = made.to_record()
            assert record["low"] is None and record["high"] is None, "JSON has no infinity"
            json.dumps(record, allow_nan=False)
    assert claims.median(range(6)).bounded


def test_more_items_never_widen_an_interval_on_average():
    def width(n: int, statistic) -> float:
        widths = []
        for seed in range(4):
            draws = np.random.default_rng(seed).lognormal(size=n)  # one skewed distribution
            found = statistic(draws, seed=seed) if statistic is claims.mean else statistic(draws)
            widths.append(found.high - found.low)
        return float(np.mean(widths))

    for statistic in (claims.median, claims.mean):
        few, many = width(10, statistic), width(100, statistic)
        assert many < few, (statistic.__name__, few, many)
        assert many < 0.6 * few  # about 1/sqrt(10) as wide
    assert width(6, claims.median) > width(10, claims.median)


@pytest.mark.filterwarnings("error")  # no scipy warning (degenerate data) leaks out
@pytest.mark.parametrize("values, statistic, expected, method", [
    ([2.0] * 6, claims.median, 2.0, "exact (all items equal)"), ([7] * 9, claims.mean, 7.0, "exact (all items equal)"),
])
def test_equal_items_give_the_value_itself(values, statistic, expected, method):
    found = statistic(values)
    assert (found.value, found.low, found.high, found.n, found.method) == (expected, expected, expected, len(values),
                                                                          method)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1, 5],
                                    [3, 1, 2, 2, 2, 9]])
def test_small_and_tied_samples_give_a_finite_interval_around_the_value(values):
    for statistic in (claims.median, claims.mean):
        found = statistic(values)
        assert all(math.isfinite(x) for x in (found.low, found.value, found.high))
        assert found.low <= found.value <= found.high and found.n == len(values)


def test_non_finite_items_are_dropped_and_n_counts_the_rest():
    found = claims.mean([1.0, np.nan, 3.0, np.inf, 2.0, 4.0, 0.0, 5.0])
    assert found.n == 6 and found.value == 2.5 and "2 non-finite values dropped" in found.method
    with pytest.raises(ValueError, match=r"n >= 1"):
        claims.median([np.nan, np.nan])
    with pytest.raises(ValueError, match=r"n >= 1"):
        claims.median([])


def test_exact_has_no_interval():
    found = claims.exact(0.25, 12)
    assert (found.value, found.low, found.high, found.n, found.statistic) == (0.25, 0.25, 0.25, 12, "exact")
    assert found.text() == "0.25 (exact)" and claims.proportion([True, False]).text() == "0.5 [0.0126, 0.987]"


# ---- refusals -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, fragment", [
    ({}, ValueError, "no evidence"),
    ({"evidence": 0.5, "threshold": 0.4}, TypeError, "not a bare float"),
    ({"evidence": claims.exact(1, 1)}, ValueError, "no threshold"),
    ({"evidence": claims.exact(1, 1), "threshold": 1, "direction": ">"}, ValueError, "direction='>'"),
    ({"evidence": claims.exact(1, 1), "threshold": float("nan")}, ValueError, "finite"),
    ({"parts": (0.5,)}, TypeError, "parts"),
])
def test_a_claim_without_evidence_or_threshold_is_refused(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        Claim("the value clears the threshold", "p", "o", **kwargs)


@pytest.mark.parametrize("statement", ["Where does invisible end on this model?", "", "   "])
def test_a_claim_is_a_statement_not_a_question(statement):
    with pytest.raises(ValueError, match="question|falsifiable"):
        Claim(statement, "p", "o", evidence=claims.exact(1, 1), threshold=1)


def test_evidence_without_n_or_interval_is_refused():
    with pytest.raises(TypeError):
        Evidence("mean", 0.5, 3)  # no interval at all
    with pytest.raises(ValueError, match="number of items n"):
        Evidence("mean", 0.5, None, 0.1, 0.9, "bootstrap")
    with pytest.raises(ValueError, match="number of items n"):
        Evidence("mean", 0.5, 0, 0.1, 0.9, "bootstrap")
    with pytest.raises(ValueError, match="95 % interval"):
        Evidence("mean", 0.5, 3, None, 0.9, "bootstrap")
    with pytest.raises(ValueError, match="low > high"):
        Evidence("mean", 0.5, 3, 0.9, 0.1, "bootstrap")
    with pytest.raises(ValueError, match="finite"):  # only the whole line (UNBOUNDED) stands for "no interval"
        Evidence("mean", 0.5, 3, -math.inf, 0.9, "bootstrap")
    with pytest.raises(ValueError, match="finite"):
        Evidence("mean", math.inf, 3, *claims.UNBOUNDED, "bootstrap")


# ---- records and Output.claim ---------------------------------------------------------------------------------

def test_the_record_is_json_and_holds_everything(tmp_path):
    part = Claim("the part holds", "p", "o", evidence=claims.proportion([True] * 9 + [False]), threshold=0.5)
    whole = Claim("the whole holds", "paper", "ours", evidence=claims.median([1.0, 2.0, 3.0]), threshold=0.5,
                  parts=(part, claim(-1, 1, 0)))
    record = json.loads(json.dumps(whole.to_record(), allow_nan=False))
    assert set(record) == {"statement", "paper", "ours", "verdict", "statistic", "value", "n", "low", "high",
                           "method", "threshold", "direction", "parts"}
    assert record["verdict"] == "partly" and record["n"] == 7 and record["statistic"] == "median"
    assert record["parts"][0]["verdict"] == "holds" and record["parts"][0]["n"] == 10
    alone = Claim("only parts", "p", "o", parts=[part]).to_record()
    assert alone["value"] is None and alone["threshold"] is None and alone["verdict"] == "holds"


def test_output_claim_records_the_claim_and_returns_it(tmp_path):
    out = figures.Output("nb", root=tmp_path)
    made = vq.Claim("Min-norm matches reach cosine 0.99", "cos ~1", "11/12 pairs",
                    evidence=vq.claims.proportion([True] * 11 + [False]), threshold=0.95)
    assert out.claim(made) is made
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["claims"] == {made.statement: made.to_record()}
    assert manifest["claims"][made.statement]["verdict"] == "inconclusive (n = 12)"
    row = out.claims_table().iloc[0]
    assert (row["n"], row["interval"], row["threshold"], row["verdict"]) == (12, "[0.615, 0.998]", ">= 0.95",
                                                                              "inconclusive (n = 12)")


@pytest.mark.parametrize("args, kwargs", [(("c", "p", "o", "holds"), {}), (("c",), {"paper": "p"}),
                                          (("c",), {})])
def test_the_old_out_claim_signature_is_refused(tmp_path, args, kwargs):
    out = figures.Output("nb", root=tmp_path)
    with pytest.raises(TypeError, match=r"vq\.Claim.*n and a 95 % interval.*threshold"):
        out.claim(*args, **kwargs)
    assert json.loads((tmp_path / "manifest.json").read_text())["claims"] == {}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40), st.floats(0.05, 0.95))
def test_a_proportion_claim_agrees_with_its_interval(flags, threshold):
    made = Claim("most pairs match", "p", "o", evidence=claims.proportion(flags), threshold=threshold)
    low, high = made.evidence.low, made.evidence.high
    assert made.verdict == ("holds" if low >= threshold else "not" if high < threshold
                            else f"inconclusive (n = {len(flags)})")
