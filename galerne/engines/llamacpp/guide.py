"""Apply one request's llguidance matcher to its logits: forbidden tokens get -inf before sampling.

Only constrained sequences carry a guide, so unconstrained ones pay nothing. Tokens the grammar
forces (`{"name":"` after `[`) are fast-forwarded: decoded in the next batch without sampling.
"""

from __future__ import annotations

import llguidance
import llguidance.numpy as lnp
import numpy as np
import numpy.typing as npt


class GrammarViolation(RuntimeError):
    """The matcher refused a token (it cannot happen when the mask was applied; reported as an error)."""


class GrammarGuide:
    def __init__(self, matcher: llguidance.LLMatcher, num_vocab: int) -> None:
        self._matcher = matcher
        self._num_vocab = num_vocab
        self._bitmask = lnp.allocate_token_bitmask(1, num_vocab)

    @property
    def is_done(self) -> bool:
        """The grammar is complete: nothing but end-of-text may follow."""
        return self._matcher.is_stopped()

    def mask(self, logits: npt.NDArray[np.float32]) -> None:
        """Set the logits of tokens the grammar forbids next to -inf, in place."""
        lnp.fill_next_token_bitmask(self._matcher, self._bitmask, 0)
        allowed = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[: self._num_vocab].view(bool)
        np.copyto(logits[: allowed.size], np.float32(-np.inf), where=~allowed)

    def accept(self, token: int) -> list[int]:
        """Consume the sampled token; returns the tokens the grammar now forces (already consumed)."""
        if not self._matcher.consume_token(token):
            raise GrammarViolation(self._matcher.get_error() or f"token {token} refused by the grammar")
        if self._matcher.is_stopped():
            return []
        forced = self._matcher.compute_ff_tokens()
        if forced and not self._matcher.consume_tokens(forced):
            raise GrammarViolation(self._matcher.get_error() or "forced tokens refused by the grammar")
        return forced
