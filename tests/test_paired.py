"""Paired statistics of two classifiers on the same test images (publish's promotion gate)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from pipeline.paired import difference, discordant, interval, lower_bound, mcnemar_p


def exact_tail(b: int, c: int) -> float:
    """P(X >= b), X ~ Binomial(b + c, 1/2), in exact fractions (the hand computation)."""
    m = b + c
    return float(Fraction(sum(math.comb(m, k) for k in range(b, m + 1)), 2**m))


def test_mcnemar_p_matches_the_hand_computed_binomial_tail() -> None:
    # 8 images only the candidate gets right, 2 only the champion: (C(10,8) + C(10,9) + C(10,10)) / 2^10
    assert mcnemar_p(8, 2) == pytest.approx((45 + 10 + 1) / 1024, rel=1e-12)
    assert mcnemar_p(8, 2) == pytest.approx(0.0546875, rel=1e-12)
    for b, c in [(60, 10), (0, 5), (5, 0), (51, 50), (700, 650)]:
        assert mcnemar_p(b, c) == pytest.approx(exact_tail(b, c), rel=1e-9)


def test_mcnemar_p_edges_and_thousands_of_disagreements() -> None:
    assert mcnemar_p(0, 0) == 1.0  # no disagreement: no evidence
    assert mcnemar_p(1, 0) == 0.5  # better by one image: a coin flip
    assert mcnemar_p(0, 3) == 1.0
    p = mcnemar_p(5200, 4800)  # 10,000 discordant images: no float overflow, a small p
    assert 0 < p < 1e-4
    with pytest.raises(ValueError):
        mcnemar_p(-1, 2)


def test_the_interval_of_the_difference() -> None:
    assert difference(60, 10, 10_000) == pytest.approx(0.005)
    low, high = interval(60, 10, 10_000)
    half = 1.959964 * math.sqrt(70 - 50**2 / 10_000) / 10_000
    assert (low, high) == (pytest.approx(0.005 - half, rel=1e-5), pytest.approx(0.005 + half, rel=1e-5))
    assert low > 0  # a clear lead: the whole interval above zero
    low, high = interval(1, 0, 10_000)
    assert low < 0 < high  # one image: the interval straddles zero
    # the one-sided 95 % bound lies inside the two-sided 95 % interval
    assert interval(20, 22, 10_000)[0] < lower_bound(20, 22, 10_000, 0.05) < difference(20, 22, 10_000)


def test_discordant_counts() -> None:
    labels = torch.tensor([0, 1, 2, 0, 1])
    candidate = torch.tensor([0, 1, 0, 1, 1])  # right on 0, 1, 4
    champion = torch.tensor([0, 2, 2, 1, 0])  # right on 0, 2
    assert discordant(labels, candidate, champion) == (5, 2, 1)
    with pytest.raises(ValueError):
        discordant(labels, candidate[:4], champion)
