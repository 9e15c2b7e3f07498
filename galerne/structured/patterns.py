"""How large a `pattern` grows once its counted repetitions are spelled out.

llguidance builds its lexer from regex derivatives, and a counted repetition is expanded: `a{10000}`
costs milliseconds, `a{1000000}` fails in the middle of decoding with an internal error. Patterns
whose expansion exceeds `MAX_PATTERN_SIZE` are refused up front, with a 400 that names the pattern.
Python's own regex parser measures the size; a pattern it cannot read is left to llguidance to judge.
"""

from __future__ import annotations

import re
import re._constants as sre
import re._parser as sre_parse
from typing import Any

from galerne.errors import InvalidRequestError

MAX_PATTERN_SIZE = 20_000
_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT}


def check_pattern_size(pattern: str) -> None:
    """Raise a 400 when `pattern`'s counted repetitions expand beyond what can be enforced."""
    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return  # not Python syntax (e.g. `\\p{L}`): llguidance parses it and says what it refuses
    size = _size(parsed)
    if size > MAX_PATTERN_SIZE:
        shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
        raise InvalidRequestError(
            f"the pattern {shown!r} spells out to about {size:,} characters once its counted repetitions "
            f"(`{{n}}`, `{{n,m}}`) are expanded; at most {MAX_PATTERN_SIZE:,} can be enforced. Use smaller "
            "counts, or `+`/`*` with a `maxLength`"
        )


def _size(items: Any) -> int:
    total = 0
    for op, value in items:
        if op in _REPEATS:
            low, high, sub = value
            count = low if high == sre.MAXREPEAT else high
            total += max(count, 1) * _size(sub)
        elif op is sre.SUBPATTERN:
            total += _size(value[-1])
        elif op is sre.BRANCH:
            total += max((_size(branch) for branch in value[1]), default=0)
        else:
            total += 1
        if total > MAX_PATTERN_SIZE:
            return total
    return total
