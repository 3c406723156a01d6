"""Two classifiers compared on the same test images: the paired statistics publish's gate uses.

Scored on the same images, two models agree on most of them; only the discordant images (one
right, the other wrong) say which is better. With ``b`` images only the candidate gets right,
``c`` only the champion, and ``n`` images in all:

- the accuracy difference is ``(b - c) / n``;
- McNemar's exact test: without a difference each discordant image is a fair coin, so the
  one-sided p that the candidate is *not* better is ``P(X >= b)`` for ``X ~ Binomial(b + c, 1/2)``;
- the difference's confidence interval is the Wald interval of a paired difference of
  proportions, ``(b - c) / n ± z · sqrt(b + c - (b - c)² / n) / n`` (at n = 10,000 test images
  and tens of discordant ones, where the normal approximation is close).

Standard library only: the binomial tail is summed exactly in integers and divided in log
space, so ``b + c`` of several thousand neither overflows nor loses precision.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch


def discordant(labels: torch.Tensor, candidate: torch.Tensor, champion: torch.Tensor) -> tuple[int, int, int]:
    """(n, images only ``candidate`` predicts right, images only ``champion`` predicts right)."""
    if not labels.shape == candidate.shape == champion.shape:
        raise ValueError(f"predictions of shapes {tuple(candidate.shape)} and {tuple(champion.shape)} "
                         f"for {tuple(labels.shape)} labels")
    right_a, right_b = candidate.cpu() == labels.cpu(), champion.cpu() == labels.cpu()
    return len(labels), int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())


def mcnemar_p(candidate_only: int, champion_only: int) -> float:
    """McNemar's exact one-sided p-value that the candidate is not better than the champion:
    ``P(X >= candidate_only)``, ``X ~ Binomial(candidate_only + champion_only, 1/2)``
    (1.0 when no image is discordant)."""
    if candidate_only < 0 or champion_only < 0:
        raise ValueError("discordant counts cannot be negative")
    m = candidate_only + champion_only
    if m == 0:
        return 1.0
    term, tail = math.comb(m, candidate_only), 0  # C(m, k) for k = candidate_only .. m, exactly
    for k in range(candidate_only, m + 1):
        tail += term
        term = term * (m - k) // (k + 1)
    return min(1.0, math.exp(math.log(tail) - m * math.log(2)))


def difference(candidate_only: int, champion_only: int, n: int) -> float:
    """Candidate accuracy minus champion accuracy (0-1)."""
    return (candidate_only - champion_only) / n if n else 0.0


def _half_width(candidate_only: int, champion_only: int, n: int, z: float) -> float:
    if n == 0:
        return math.inf
    d = candidate_only - champion_only
    return z * math.sqrt(max(candidate_only + champion_only - d * d / n, 0.0)) / n


def interval(candidate_only: int, champion_only: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided ``confidence`` interval of the accuracy difference (0-1)."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    mid, half = difference(candidate_only, champion_only, n), _half_width(candidate_only, champion_only, n, z)
    return mid - half, mid + half


def lower_bound(candidate_only: int, champion_only: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` lower confidence bound of the accuracy difference (0-1): above
    ``-margin`` means "not worse by more than margin" at significance ``alpha``."""
    z = NormalDist().inv_cdf(1 - alpha)
    return difference(candidate_only, champion_only, n) - _half_width(candidate_only, champion_only, n, z)
