"""Reading a model's answer out of its reply: the number of a GSM8K solution, the code of a completion.

Example::

    extract_number("… so she has 18 dollars.\\n#### 18")   # "18"
"""

from __future__ import annotations

import re

from galerne.evals.formats import normalise_number

_MARKED = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def extract_number(reply: str) -> str | None:
    """The number after "####" when the reply has one (GSM8K's strict match), else its last number
    (lm-eval-harness's flexible extract); None when it has no number at all."""
    marked = _MARKED.findall(reply)
    if marked:
        return normalise_number(marked[-1])
    numbers = _NUMBER.findall(reply)
    return normalise_number(numbers[-1]) if numbers else None


def completion_code(reply: str, prefix: str, stops: tuple[str, ...]) -> str:
    """The code the model added after `prefix`: the reply may repeat the prefix (the chat service returns
    prefix and continuation together), and anything from the first stop sequence on is cut."""
    code = reply[len(prefix):] if reply.startswith(prefix) else reply
    cut = min((index for stop in stops if (index := code.find(stop)) >= 0), default=len(code))
    return code[:cut]
