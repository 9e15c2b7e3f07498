"""Turn a stream of token bytes into a stream of text, honouring stop strings.

Tokens can split a UTF-8 character, and a stop string can straddle tokens, so text is released only
when it is complete and can no longer turn out to be the start of a stop string. Nothing after a stop
string is ever released, and the stop string itself is not (OpenAI and la Plateforme semantics).
"""

from __future__ import annotations

import codecs


class TextAssembler:
    """Accumulates token pieces; `push` returns the text safe to send and whether a stop string hit."""

    def __init__(self, stop: tuple[str, ...], *, strips_leading_spaces: bool = False) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = stop
        self._held = ""
        # A reply written after "Answer:" (a transcript template) starts with the word's space; drop it.
        self._strips_leading_spaces = strips_leading_spaces

    def push(self, piece: bytes) -> tuple[str, bool]:
        """Add one token's bytes; returns (text to emit now, stop string found)."""
        self._held += self._decoder.decode(piece)
        if self._strips_leading_spaces:
            self._held = self._held.lstrip(" ")
            self._strips_leading_spaces = not self._held
        if not self._stop:
            text, self._held = self._held, ""
            return text, False
        cut = _first_stop(self._held, self._stop)
        if cut is not None:
            text, self._held = self._held[:cut], ""
            return text, True
        keep = _longest_stop_prefix_suffix(self._held, self._stop)
        split = len(self._held) - keep
        text, self._held = self._held[:split], self._held[split:]
        return text, False

    def disable_stops(self) -> None:
        """Stop applying stop strings (a tool call ends with its grammar, not with a client's stop)."""
        self._stop = ()

    def flush(self) -> str:
        """Whatever is held back once the generation ends for another reason than a stop string."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text


def _first_stop(text: str, stop: tuple[str, ...]) -> int | None:
    positions = [index for index in (text.find(item) for item in stop) if index >= 0]
    return min(positions) if positions else None


def _longest_stop_prefix_suffix(text: str, stop: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that begins some stop string (so it must be held)."""
    longest = 0
    for item in stop:
        for length in range(min(len(item) - 1, len(text)), longest, -1):
            if text.endswith(item[:length]):
                longest = length
                break
    return longest
