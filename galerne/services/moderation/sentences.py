"""Holding a streamed reply back a sentence at a time, so output is screened before anyone reads it."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Where a sentence ends in text as it streams: terminal punctuation (closing quotes or brackets included)
# followed by white space, or a line break. An abbreviation ("e.g. ") only makes an extra, early check.
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]+[\"'\u00bb\u201d\u2019)\]]*(?=\s)|\n")
# Text with no sentence end (code, a list without full stops) is released at a space past this many characters,
# so a stream never stalls on one unending "sentence".
MAX_HELD_CHARACTERS = 400


@dataclass(slots=True)
class SentenceHold:
    """One streamed choice's text not yet released: held until a sentence ends (at most one sentence)."""

    pending: str = ""
    released: str = ""

    def add(self, text: str, *, is_final: bool) -> str:
        """Take new text; return the complete sentences now ready to screen (all of it when final)."""
        self.pending += text
        if is_final:
            ready, self.pending = self.pending, ""
            return ready
        ends = [match.end() for match in _SENTENCE_END.finditer(self.pending)]
        if not ends and len(self.pending) > MAX_HELD_CHARACTERS:
            ends = [self.pending.rfind(" ") + 1]
        if not ends or ends[-1] <= 0:
            return ""
        ready, self.pending = self.pending[: ends[-1]], self.pending[ends[-1] :]
        return ready
