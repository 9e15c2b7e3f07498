"""Pick the next token from a logits row, in numpy, one sampler per request.

Each request owns its random generator, so a `random_seed` reproduces the same tokens whatever else
runs in the batch. Nucleus sampling sorts only the tokens that can matter: a full sort of a 49k
vocabulary costs milliseconds per token, more than the forward pass of a small model.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import numpy.typing as npt

from galerne.inference.types import SamplingParams

# Tokens below this probability are left out of the nucleus sort unless they are needed to reach top_p.
_NUCLEUS_FLOOR = 1e-6


class TokenSampler:
    """Temperature, top-p, presence/frequency penalties and a seeded generator for one request."""

    def __init__(self, params: SamplingParams) -> None:
        self._params = params
        self._rng = np.random.default_rng(params.seed)
        self._counts: Counter[int] = Counter()

    def sample(self, logits: npt.NDArray[np.float32]) -> int:
        """Choose a token; `logits` may be modified in place (it is the engine's scratch row)."""
        if self._params.has_penalties and self._counts:
            self._apply_penalties(logits)
        token = int(np.argmax(logits)) if self._params.is_greedy else self._draw(logits)
        if self._params.has_penalties:
            self._counts[token] += 1
        return token

    def _apply_penalties(self, logits: npt.NDArray[np.float32]) -> None:
        tokens = np.fromiter(self._counts.keys(), dtype=np.intp, count=len(self._counts))
        counts = np.fromiter(self._counts.values(), dtype=np.float32, count=len(self._counts))
        logits[tokens] -= counts * self._params.frequency_penalty + self._params.presence_penalty

    def _draw(self, logits: npt.NDArray[np.float32]) -> int:
        scaled = logits / np.float32(self._params.temperature)
        scaled -= scaled.max()
        probs = np.exp(scaled, out=scaled)
        probs /= probs.sum()
        if self._params.top_p < 1.0:
            candidates, weights = _nucleus(probs, self._params.top_p)
        else:
            candidates, weights = None, probs
        cumulative = np.cumsum(weights)
        choice = int(np.searchsorted(cumulative, self._rng.random() * cumulative[-1], side="right"))
        choice = min(choice, len(cumulative) - 1)
        return choice if candidates is None else int(candidates[choice])


def _nucleus(probs: npt.NDArray[np.float32], top_p: float) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """The smallest set of most likely tokens whose mass reaches `top_p`, most likely first."""
    candidates = np.flatnonzero(probs >= _NUCLEUS_FLOOR)
    if probs[candidates].sum() < top_p:
        candidates = np.arange(len(probs))
    order = candidates[np.argsort(-probs[candidates], kind="stable")]
    sorted_probs = probs[order]
    cut = int(np.searchsorted(np.cumsum(sorted_probs), top_p, side="left")) + 1
    return order[:cut], sorted_probs[:cut]
