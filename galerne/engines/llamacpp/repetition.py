"""A loop guard for constrained decoding: penalise the token that would extend a repeat.

Under a grammar a small model loops more than in free text: greedy decoding reinforces whatever it
just wrote, and the grammar removes the natural exits (no prose, no end of text in the middle of an
array), so `"keywords":["food","cuisine","foodie","foodie",...` runs to `max_tokens`. This is the DRY
("don't repeat yourself") penalty of text-generation-webui and llama.cpp's `dry` sampler: when the
text just written has already appeared, followed by token `t`, `t`'s logit is lowered by
`multiplier * base ** (match_length - allowed_length)`, so a repeat costs more the longer it runs.
Applied after the grammar mask, it only reorders allowed tokens and can never break the shape.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

MULTIPLIER = 0.8
BASE = 1.75
ALLOWED_LENGTH = 2
_MAX_MATCH = 32  # beyond this the penalty is already overwhelming; bounds the cost per step
_MAX_OCCURRENCES = 64
_MAX_PENALTY = 1e4  # finite: a penalised token the grammar alone allows must stay samplable


def penalise_repeats(logits: npt.NDArray[np.float32], history: list[int]) -> None:
    """Lower, in place, the logits of tokens that would continue a repeated stretch of `history`."""
    if len(history) < ALLOWED_LENGTH + 1:
        return
    last = history[-1]
    end = len(history) - 1
    penalties: dict[int, float] = {}
    seen = 0
    for start in range(end - 1, -1, -1):  # most recent earlier occurrences of the last token first
        if history[start] != last:
            continue
        seen += 1
        if seen > _MAX_OCCURRENCES:
            break
        length = 1
        while length < _MAX_MATCH and start - length >= 0 and history[start - length] == history[end - length]:
            length += 1
        if length >= ALLOWED_LENGTH:
            follower = history[start + 1]
            penalty = min(MULTIPLIER * BASE ** (length - ALLOWED_LENGTH), _MAX_PENALTY)
            penalties[follower] = max(penalties.get(follower, 0.0), penalty)
    for token, penalty in penalties.items():
        logits[token] -= np.float32(penalty)
