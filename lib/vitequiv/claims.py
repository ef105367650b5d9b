"""Claims with their evidence: a measured value, its number of items n, a 95 % interval, and a verdict by rule.

A notebook states each claim of the paper as a falsifiable sentence, measures it, and hands the measurement to
:class:`Claim` with a threshold fixed before the run::

    out.claim(vq.Claim(
        "Min-norm matches reach cosine 0.99 after 8-bit rounding",      # the statement, never a question
        "matched images have cosine ~1 to the target",                   # the paper's evidence
        f"{k}/{n} pairs reach it",                                       # our measurement, in words
        evidence=vq.claims.proportion(matched),                          # flags (n,)
        threshold=0.95, direction=">=",
    ))

The evidence comes from one of four constructors, none of them written by hand:

- :func:`median`: the distribution-free interval from order statistics (``scipy.stats.quantile_test``), 95 %;
- :func:`mean`: a bootstrap over the items (``scipy.stats.bootstrap``, 9,999 resamples, BCa, seeded), 95 %;
- :func:`proportion`: the exact binomial (Clopper-Pearson) interval of ``scipy.stats.binomtest``, 95 %;
- :func:`exact`: a deterministic quantity (no sampling uncertainty): the interval is the value itself.

Fewer than :data:`MIN_ITEMS` (6) items give no 95 % interval for a median or a mean: the range of n items holds
their median with probability 1 - 2^(1 - n), 0.94 for five, and a bootstrap interval is narrower than the range.
Such evidence has the unbounded interval (-inf, inf), so its claim reads inconclusive whatever the two or three
values are. (A bootstrap over two items gave their range, a 50 % interval, and so verdicts that turned with the
seed: issue 29.)

The verdict (:attr:`Claim.verdict`) is decided by the interval alone: **holds** when the whole interval lies on
the claim's side of the threshold, **not** when it lies on the other side, **inconclusive (n = N)** when it
straddles the threshold; **partly** only for a claim made of parts, some of which hold.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Direction = Literal[">=", "<="]
DIRECTIONS: tuple[str, ...] = (">=", "<=")
CONFIDENCE = 0.95
N_RESAMPLES = 9_999
STATISTICS = ("median", "mean", "proportion", "exact")
VERDICTS = ("holds", "not", "inconclusive", "partly")  # "inconclusive" is written "inconclusive (n = N)"
EXACT_METHOD = "exact"
UNBOUNDED = (-math.inf, math.inf)  # the interval of evidence from too few items
NO_INTERVAL = "no 95 % interval"  # how tables show it
BINOMIAL_METHOD = "exact binomial (Clopper-Pearson)"
_BATCH_ELEMENTS = 2_000_000  # resampled values held at once by the bootstrap (memory bound for large n)
# The fewest items whose range holds their median with 95 % probability (1 - 2^(1 - n) >= 0.95): 6.
MIN_ITEMS = next(n for n in itertools.count(1) if 1 - 2.0 ** (1 - n) >= CONFIDENCE)


def _finite_number(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return value


@dataclass(frozen=True)
class Evidence:
    """A measured value with its number of items and a 95 % interval.

    Build it with :func:`median`, :func:`mean`, :func:`proportion` or :func:`exact` rather than by hand.
    """

    statistic: str  # "median", "mean", "proportion", "exact"
    value: float
    n: int
    low: float  # -inf and inf (and nothing else infinite) for too few items: no 95 % interval
    high: float
    method: str  # e.g. "bootstrap, 9,999 resamples, BCa" / "exact binomial (Clopper-Pearson)" / "exact"

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"Evidence(statistic={self.statistic!r}): expected one of {STATISTICS}")
        if isinstance(self.n, (bool, np.bool_)) or not isinstance(self.n, numbers.Integral) or self.n < 1:
            raise ValueError(f"Evidence(n={self.n!r}): a claim's evidence needs its number of items n, an "
                             "integer >= 1 (build evidence with vq.claims.median, mean, proportion or exact)")
        object.__setattr__(self, "n", int(self.n))
        for name in ("value", "low", "high"):
            if getattr(self, name) is None:
                raise ValueError(f"Evidence({name}=None): a claim's evidence needs its value and its 95 % interval "
                                 "(low, high); build it with vq.claims.median, mean, proportion or exact")
        object.__setattr__(self, "value", _finite_number(self.value, "Evidence(value=...)"))
        if (self.low, self.high) != UNBOUNDED:
            for name in ("low", "high"):
                object.__setattr__(self, name, _finite_number(getattr(self, name), f"Evidence({name}=...)"))
        if self.low > self.high:
            raise ValueError(f"Evidence: interval [{self.low}, {self.high}] has low > high")
        if not isinstance(self.method, str) or not self.method:
            raise ValueError("Evidence(method=...): say how the interval was made, e.g. 'exact'")

    @property
    def bounded(self) -> bool:
        """Whether there is a 95 % interval at all (not so for a median or mean of fewer than MIN_ITEMS items)."""
        return (self.low, self.high) != UNBOUNDED

    @property
    def is_exact(self) -> bool:
        """Whether the interval is the value itself (a deterministic quantity, or items that all agree)."""
        return self.low == self.high == self.value

    def text(self, digits: int = 3) -> str:
        """``"0.083 [0.0021, 0.38]"``, or ``"0.5 (exact)"`` when there is no sampling uncertainty."""
        return estimate_text(self.value, self.low, self.high, self.statistic, digits)


def estimate_text(value: float | None, low: float | None, high: float | None, statistic: str | None = None,
                  digits: int = 3) -> str:
    """An estimate with its 95 % interval for a table: ``"0.083 [0.0021, 0.38]"``, ``"1 (exact)"``; ``"-"`` if none."""
    if value is None:
        return "-"
    number = f"{value:.{digits}g}"
    if statistic == "exact":
        return f"{number} (exact)"
    if low is None or high is None or (low, high) == UNBOUNDED:  # too few items (a record has None), or a record
        return f"{number} [{NO_INTERVAL}]" if statistic else number  # from before intervals (no statistic)
    return f"{number} [{low:.{digits}g}, {high:.{digits}g}]"


def _values(values: Any, what: str) -> tuple[np.ndarray, int]:
    """Values as a flat float64 array without the non-finite ones, and how many were dropped; refuses n = 0."""
    if isinstance(values, Evidence) or isinstance(values, (str, bytes)):
        raise TypeError(f"vq.claims.{what}(values): expected the measured items (a list, array or tensor), "
                        f"got {type(values).__name__}")
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=float).ravel()
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        raise ValueError(f"vq.claims.{what}(values): no finite value among {array.size} items; a claim needs at "
                         "least one measured item (n >= 1)")
    return finite, int(array.size - finite.size)


def _dropped(method: str, dropped: int) -> str:
    return method if not dropped else f"{method}; {dropped} non-finite value{'s' if dropped > 1 else ''} dropped"


def _bootstrap(values: np.ndarray, statistic: Callable[..., np.ndarray], seed: int) -> tuple[float, float, str]:
    """The 95 % bootstrap interval of ``statistic`` over ``values`` (n >= 2, not all equal), and its method."""
    from scipy import stats

    batch = max(1, _BATCH_ELEMENTS // values.size)
    for method in ("BCa", "percentile"):  # BCa can be undefined on tiny or tied samples: then the percentile one
        kwargs: dict[str, Any] = {"rng": np.random.default_rng(seed)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = stats.bootstrap((values,), statistic, n_resamples=N_RESAMPLES, batch=batch,
                                         vectorized=True, confidence_level=CONFIDENCE, method=method, **kwargs)
            except TypeError:  # scipy < 1.15: random_state instead of rng
                kwargs = {"random_state": np.random.default_rng(seed)}
                result = stats.bootstrap((values,), statistic, n_resamples=N_RESAMPLES, batch=batch,
                                         vectorized=True, confidence_level=CONFIDENCE, method=method, **kwargs)
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high) and not caught:
            return low, high, f"bootstrap, {N_RESAMPLES:,} resamples, {method}, seed {seed}"
    low, high = float(values.min()), float(values.max())  # not reached in practice: the range of the items
    return low, high, "range of the items (bootstrap undefined)"


def too_few(statistic: str, value: float, n: int, method: str = "") -> Evidence | None:
    """Evidence with no 95 % interval (:data:`UNBOUNDED`) when ``n`` is below :data:`MIN_ITEMS`, else None."""
    if n >= MIN_ITEMS:
        return None
    why = f"{NO_INTERVAL} from {n} item{'s' if n > 1 else ''} (at least {MIN_ITEMS} needed)"
    return Evidence(statistic, value, n, *UNBOUNDED, f"{method}; {why}" if method else why)


def _location(values: Any, name: str, statistic: Callable[..., np.ndarray],
              interval: Callable[[np.ndarray], tuple[float, float, str]]) -> Evidence:
    finite, dropped = _values(values, name)
    value = float(statistic(finite, axis=-1))
    few = too_few(name, value, finite.size)
    if few is not None:
        return dataclasses.replace(few, method=_dropped(few.method, dropped))
    if np.all(finite == finite[0]):
        return Evidence(name, value, finite.size, value, value, _dropped("exact (all items equal)", dropped))
    low, high, method = interval(finite)
    low, high = min(low, value), max(high, value)  # an interval always holds its own estimate
    return Evidence(name, value, finite.size, low, high, _dropped(method, dropped))


def _order_statistics(values: np.ndarray) -> tuple[float, float, str]:
    """The distribution-free 95 % interval of the median: two order statistics of ``values`` (n >= MIN_ITEMS)."""
    from scipy import stats

    found = stats.quantile_test(values, q=float(np.median(values)), p=0.5).confidence_interval(CONFIDENCE)
    return float(found.low), float(found.high), "order statistics (distribution-free, scipy quantile_test)"


def median(values: Any) -> Evidence:
    """The median of the items (n,) with its distribution-free 95 % interval (two order statistics, exact coverage
    whatever the distribution); non-finite items are dropped, n counts the rest.

    Fewer than :data:`MIN_ITEMS` items give no interval (:data:`UNBOUNDED`); items all equal give the value itself.
    """
    return _location(values, "median", np.median, _order_statistics)


def mean(values: Any, *, seed: int = 0) -> Evidence:
    """The mean of the items (n,) with its 95 % bootstrap interval; non-finite items are dropped, n counts the rest.

    Fewer than :data:`MIN_ITEMS` items give no interval (:data:`UNBOUNDED`); items all equal give the value itself.
    """
    return _location(values, "mean", np.mean, lambda finite: _bootstrap(finite, np.mean, seed))


def proportion(flags: Any) -> Evidence:
    """The fraction of true flags (n,) with its exact binomial (Clopper-Pearson) 95 % interval.

    ``flags`` are booleans (or 0 / 1); anything else (a fraction, a NaN) is refused.
    """
    from scipy import stats

    if isinstance(flags, (str, bytes, Evidence)) or isinstance(flags, (bool, np.bool_, numbers.Number)):
        raise TypeError(f"vq.claims.proportion(flags): expected one flag per item (a list, array or tensor of "
                        f"booleans), got {type(flags).__name__} {flags!r}")
    if hasattr(flags, "detach"):
        flags = flags.detach().cpu().numpy()
    array = np.asarray(flags).ravel()
    if array.size == 0:
        raise ValueError("vq.claims.proportion(flags): no item; a claim needs at least one measured item (n >= 1)")
    if array.dtype != bool:
        numeric = np.asarray(array, dtype=float)
        if not np.all((numeric == 0) | (numeric == 1)):
            raise ValueError("vq.claims.proportion(flags): expected booleans (or 0 / 1) per item, got values "
                             f"such as {numeric[(numeric != 0) & (numeric != 1)][:3].tolist()}")
        array = numeric == 1
    k, n = int(array.sum()), int(array.size)
    interval = stats.binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return Evidence("proportion", k / n, n, float(interval.low), float(interval.high), BINOMIAL_METHOD)


def exact(value: float, n: int) -> Evidence:
    """A deterministic quantity over n items (no sampling uncertainty): the interval is the value itself."""
    value = _finite_number(value, "vq.claims.exact(value)")
    return Evidence("exact", value, n, value, value, EXACT_METHOD)


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as we test it: a statement, the paper's evidence, our measurement, a verdict by rule.

    ``evidence`` (from :func:`median`, :func:`mean`, :func:`proportion`, :func:`exact`) and ``threshold`` decide
    the verdict; ``direction`` ``">="`` means the claim holds when the value is at least the threshold, ``"<="``
    at most. A claim with ``parts`` takes its verdict from them (and may then leave evidence and threshold out).
    """

    statement: str
    paper: str
    ours: str
    evidence: Evidence | None = None
    threshold: float | None = None
    direction: Direction = ">="
    parts: tuple[Claim, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("statement", "paper", "ours"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Claim({name}=...) must be a string, got {type(getattr(self, name)).__name__}")
        statement = self.statement.strip()
        if not statement:
            raise ValueError("Claim(statement=''): state the claim as a falsifiable sentence")
        if statement.endswith("?"):
            raise ValueError(f"Claim({self.statement!r}): a claim is a falsifiable statement, not a question; "
                             "rephrase it as a sentence that the measurement can confirm or refute")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"Claim(direction={self.direction!r}): expected one of {DIRECTIONS} (the claim holds "
                             "when the value is >= or <= the threshold)")
        if self.evidence is not None and not isinstance(self.evidence, Evidence):
            raise TypeError(f"Claim(evidence={self.evidence!r}): expected vq.claims.Evidence with n and a 95 % "
                            "interval, built by vq.claims.median, mean, proportion or exact (not a bare "
                            f"{type(self.evidence).__name__})")
        parts = tuple(self.parts) if isinstance(self.parts, (list, tuple)) else self.parts
        if not isinstance(parts, tuple) or not all(isinstance(p, Claim) for p in parts):
            raise TypeError("Claim(parts=...) must be a tuple of vq.Claim")
        object.__setattr__(self, "parts", parts)
        if self.evidence is None and not parts:
            raise ValueError(f"Claim({self.statement!r}): no evidence; a claim needs its measured value with n and a "
                             "95 % interval (evidence=vq.claims.median(...), mean, proportion or exact), or parts")
        if self.threshold is None:
            if not parts:
                raise ValueError(f"Claim({self.statement!r}): no threshold; fix the threshold the value is compared "
                                 "with before the run (threshold=..., direction='>=' or '<=')")
        else:
            object.__setattr__(self, "threshold", _finite_number(self.threshold, "Claim(threshold=...)"))

    @property
    def n(self) -> int:
        """The number of items behind the verdict: the evidence's n, or the smallest n among the parts."""
        if self.parts:
            return min(part.n for part in self.parts)
        assert self.evidence is not None
        return self.evidence.n

    @property
    def verdict(self) -> str:
        """``"holds"``, ``"not"``, ``"inconclusive (n = N)"`` (by the interval), or ``"partly"`` (parts only)."""
        inconclusive = f"inconclusive (n = {self.n})"
        if self.parts:
            verdicts = [part.verdict for part in self.parts]
            if all(v == "holds" for v in verdicts):
                return "holds"
            if all(v == "not" for v in verdicts):
                return "not"
            return "partly" if "holds" in verdicts else inconclusive
        assert self.evidence is not None and self.threshold is not None
        return interval_verdict(self.evidence.low, self.evidence.high, self.threshold, self.direction, self.n)

    def to_record(self) -> dict:
        """The claim as JSON: statement, paper, ours, verdict, statistic, value, n, low, high, method, threshold,
        direction, parts (records); the evidence's fields are None for a claim made of parts alone."""
        evidence = self.evidence
        return {
            "statement": self.statement, "paper": self.paper, "ours": self.ours, "verdict": self.verdict,
            "statistic": evidence.statistic if evidence else None,
            "value": evidence.value if evidence else None,
            "n": self.n,
            "low": evidence.low if evidence and evidence.bounded else None,  # JSON has no infinity
            "high": evidence.high if evidence and evidence.bounded else None,
            "method": evidence.method if evidence else None,
            "threshold": self.threshold, "direction": self.direction,
            "parts": [part.to_record() for part in self.parts],
        }

    def _repr_markdown_(self) -> str:
        record = self.to_record()
        return "\n".join(["| claim | estimate [95 % interval] | n | threshold | verdict |", "|---|---|---|---|---|",
                          *[_markdown_row(r) for r in (record, *record["parts"])]])


def _markdown_row(record: dict) -> str:
    threshold = "-" if record["threshold"] is None else f"{record['direction']} {record['threshold']:g}"
    estimate = estimate_text(record["value"], record["low"], record["high"], record["statistic"])
    return f"| {record['statement']} | {estimate} | {record['n']} | {threshold} | **{record['verdict']}** |"


def interval_verdict(low: float, high: float, threshold: float, direction: str, n: int) -> str:
    """The rule: ``"holds"`` when [low, high] lies on the claim's side of the threshold, ``"not"`` when it lies on
    the other side, else ``"inconclusive (n = n)"``. For ``">="``: holds iff low >= threshold, not iff high <
    threshold; for ``"<="``: holds iff high <= threshold, not iff low > threshold."""
    if direction == ">=":
        holds, fails = low >= threshold, high < threshold
    elif direction == "<=":
        holds, fails = high <= threshold, low > threshold
    else:
        raise ValueError(f"direction {direction!r}: expected one of {DIRECTIONS}")
    return "holds" if holds else "not" if fails else f"inconclusive (n = {n})"


def verdict_kind(verdict: str) -> str:
    """One of :data:`VERDICTS` for a recorded verdict (``"inconclusive (n = 12)"`` -> ``"inconclusive"``)."""
    return "inconclusive" if verdict.startswith("inconclusive") else verdict


__all__ = ["Claim", "Direction", "Evidence", "MIN_ITEMS", "UNBOUNDED", "estimate_text", "exact", "interval_verdict",
           "mean", "median", "proportion", "too_few", "verdict_kind"]
