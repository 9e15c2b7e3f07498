"""Log-probabilities of tokens, from one row of raw logits.

Computed in float64 from llama.cpp's float32 logits, so a sum over a long continuation does not lose
digits (lm-eval sums hundreds of them); the log-sum-exp is taken once per row. Only rows that were asked
for are read: a chat without `logprobs` never pays for this.

Example::

    entry = token_logprob(context.logits(row), token=42, num_top=5, pieces=model.pieces)
    entry.logprob, [top.token for top in entry.top]
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from galerne.inference.types import TokenLogprob, TopLogprob


def log_softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The natural-log probabilities of every token (a new array; `logits` is left as it is)."""
    values = logits.astype(np.float64)
    values -= values.max()
    values -= np.log(np.exp(values).sum())
    return values


def token_logprob(
    logprobs: npt.NDArray[np.float64], token: int, num_top: int, pieces: list[bytes]
) -> TokenLogprob:
    """`token`'s entry from a row of `log_softmax`, with the `num_top` most likely tokens, best first."""
    best = int(np.argmax(logprobs))
    top: tuple[TopLogprob, ...] = ()
    if num_top > 0:
        count = min(num_top, len(logprobs))
        candidates = np.argpartition(-logprobs, count - 1)[:count]
        ordered = candidates[np.argsort(-logprobs[candidates], kind="stable")]
        top = tuple(TopLogprob(int(t), pieces[int(t)], float(logprobs[t])) for t in ordered)
    return TokenLogprob(
        token=token,
        piece=pieces[token],
        logprob=float(logprobs[token]),
        top=top,
        is_argmax=bool(logprobs[token] >= logprobs[best]),
    )
