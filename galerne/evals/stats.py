"""Confidence intervals for accuracies.

Wilson's score interval rather than the normal approximation: benchmark slices are often small (a language
of a fixture set, a subject of MMLU) and accuracies near 0 or 1, where the normal interval leaves [0, 1]
and covers too little. The bootstrap serves scores that are not a plain proportion.

Example::

    wilson_interval(42, 100)          # (0.327..., 0.518...)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Z_95 = 1.959963984540054


def wilson_interval(num_correct: int, num_total: int, z: float = Z_95) -> tuple[float, float]:
    """The 95 % Wilson score interval of `num_correct / num_total`; (0, 1) when there is nothing to count."""
    if num_total <= 0:
        return 0.0, 1.0
    p = num_correct / num_total
    denominator = 1 + z * z / num_total
    centre = (p + z * z / (2 * num_total)) / denominator
    half = z * math.sqrt(p * (1 - p) / num_total + z * z / (4 * num_total * num_total)) / denominator
    # The interval always holds p; rounding at p = 0 or 1 must not put p outside it (plots draw p - low).
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def bootstrap_interval(
    values: Sequence[float], *, num_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean of `values` (seeded: the same data gives the same interval)."""
    if not values:
        return 0.0, 1.0
    rng = random.Random(seed)
    size = len(values)
    means = sorted(sum(rng.choices(values, k=size)) / size for _ in range(num_resamples))
    tail = (1 - level) / 2
    return means[int(tail * (num_resamples - 1))], means[int((1 - tail) * (num_resamples - 1))]
