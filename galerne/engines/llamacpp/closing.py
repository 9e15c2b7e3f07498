"""Budget-aware closing: when `max_tokens` is about to run out, steer a constrained reply to its end.

A reply cut mid-structure is useless JSON. So while a constrained sequence decodes, `BudgetCloser`
estimates how many tokens the grammar still needs to finish: it walks a copy of the matcher along the
cheapest path it can see (tokens made only of closing characters `"`, `]`, `}` first, otherwise the
smallest token the grammar allows), counting forced tokens too. When the tokens left come within that
estimate (plus a margin), the sequence switches to closing: at each step only closing tokens are kept
when the grammar allows one, end-of-text as soon as the reply is complete, and otherwise the model's
own choice among tokens that do not open a new object, array or item. The reply then ends valid,
with `finish_reason: "length"` (the budget, not the model, ended it) and `is_closed_early` set.

The estimate is refreshed only near the end of the budget (every 8 tokens, then every token in the
last stretch), so a sequence far from its budget pays nothing.
"""

from __future__ import annotations

import llguidance
import llguidance.numpy as lnp
import numpy as np
import numpy.typing as npt

_CLOSING_BYTES = frozenset(b'"]}')
_OPENING_BYTES = frozenset(b"[{,")
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
MAX_WALK = 256  # tokens: an estimate beyond this is "more than the budget can hold"
_MARGIN = 4


class TokenClasses:
    """What each token does to a JSON structure; built once per model from its pieces.

    Inside a string only a token starting with `"` ends it (`"`, `"}`, `"]}`...); outside, tokens made of
    `]` and `}` close arrays and objects. Tokens with `[`, `{` or `,` open something new.
    """

    def __init__(self, pieces: list[bytes], is_end: list[bool]) -> None:
        self.pieces = pieces
        closing = np.array([bool(p) and set(p) <= _CLOSING_BYTES for p in pieces], dtype=bool)
        starts_quote = np.array([p[:1] == b'"' for p in pieces], dtype=bool)
        self.closes_string: npt.NDArray[np.bool_] = closing & starts_quote
        self.closes_structure: npt.NDArray[np.bool_] = closing & ~starts_quote
        self.opening = np.array([bool(set(p) & _OPENING_BYTES) for p in pieces], dtype=bool)
        self.ending = np.array(is_end, dtype=bool)
        self.lengths = np.array([len(p) for p in pieces], dtype=np.int32)

    @property
    def num_vocab(self) -> int:
        return len(self.pieces)

    def closers(self, is_in_string: bool) -> npt.NDArray[np.bool_]:
        return self.closes_string if is_in_string else self.closes_structure


class JsonCursor:
    """Whether the JSON written so far ends inside a string (the only context closing tokens depend on)."""

    def __init__(self) -> None:
        self.is_in_string = False
        self._is_escaped = False

    def copy(self) -> JsonCursor:
        twin = JsonCursor()
        twin.is_in_string, twin._is_escaped = self.is_in_string, self._is_escaped
        return twin

    def feed(self, data: bytes) -> None:
        for byte in data:
            if self._is_escaped:
                self._is_escaped = False
            elif self.is_in_string and byte == _BACKSLASH:
                self._is_escaped = True
            elif byte == _QUOTE:
                self.is_in_string = not self.is_in_string


class BudgetCloser:
    """Decides when a constrained sequence must start closing, and steers its logits once it has."""

    def __init__(self, classes: TokenClasses) -> None:
        self._classes = classes
        self._scratch = lnp.allocate_token_bitmask(1, classes.num_vocab)
        self._cursor = JsonCursor()
        self._last_estimate: int | None = None
        self.is_closing = False

    def follow(self, tokens: list[int]) -> None:
        """Track the tokens the reply consumed (sampled and forced)."""
        for token in tokens:
            self._cursor.feed(self._classes.pieces[token])

    def update(self, matcher: llguidance.LLMatcher, tokens_left: int) -> None:
        """Switch to closing when `tokens_left` comes within what the grammar needs to finish."""
        if self.is_closing or not self._is_due(tokens_left):
            return
        needed = self.estimate(matcher)
        self._last_estimate = needed
        if tokens_left <= needed + max(_MARGIN, needed // 4):
            self.is_closing = True

    def estimate(self, matcher: llguidance.LLMatcher) -> int:
        """Tokens to reach the end of the grammar along the cheapest path in sight (capped at `MAX_WALK`)."""
        walker, cursor = matcher.deep_copy(), self._cursor.copy()
        steps = 0
        while steps < MAX_WALK:
            if walker.is_stopped() or walker.is_accepting():
                return steps
            forced = walker.compute_ff_tokens()
            if not forced:
                token = self._cheapest(self._allowed(walker), cursor.is_in_string)
                if token is None:
                    return MAX_WALK
                forced = [token]
            if not walker.consume_tokens(forced):
                return MAX_WALK
            for token in forced:
                cursor.feed(self._classes.pieces[token])
            steps += len(forced)
        return MAX_WALK

    def steer(self, logits: npt.NDArray[np.float32], allowed: npt.NDArray[np.bool_], is_complete: bool) -> None:
        """Once closing: keep only end-of-text when the reply is complete, else the tokens that close the
        current string or structure when any is allowed, else allowed tokens that open nothing new."""
        for keep in (
            allowed & self._classes.ending if is_complete else None,
            allowed & self._classes.closers(self._cursor.is_in_string),
            allowed & ~self._classes.opening,
        ):
            if keep is not None and keep.any():
                np.copyto(logits[: keep.size], np.float32(-np.inf), where=~keep)
                return

    def _cheapest(self, allowed: npt.NDArray[np.bool_], is_in_string: bool) -> int | None:
        closing = np.flatnonzero(allowed & self._classes.closers(is_in_string))
        if closing.size:
            return int(closing[np.argmax(self._classes.lengths[closing])])  # `"}]` closes more than `"`
        quiet = np.flatnonzero(allowed & ~self._classes.opening)
        candidates = quiet if quiet.size else np.flatnonzero(allowed)
        return int(candidates[0]) if candidates.size else None  # low ids are single characters

    def _is_due(self, tokens_left: int) -> bool:
        last = self._last_estimate
        if last is None:
            return True  # the first step: a baseline for how far the end is
        if tokens_left > 2 * last + 32:
            return False
        return tokens_left <= last + 16 or tokens_left % 8 == 0

    def _allowed(self, matcher: llguidance.LLMatcher) -> npt.NDArray[np.bool_]:
        lnp.fill_next_token_bitmask(matcher, self._scratch, 0)
        bits = np.unpackbits(self._scratch.view(np.uint8), bitorder="little")[: self._classes.num_vocab]
        return bits.view(bool)
