"""The last check of a constrained reply: does the value really satisfy the caller's schema?

The grammar holds decoding to the schema, but llguidance enforces only what it implements: it accepts
`uniqueItems`, `contains`, `not`, `if`/`then`, `dependentRequired` and a few more with a warning and
lets any value through for them. So every finished reply is validated with `jsonschema` before it
leaves the engine; a reply that fails becomes an error, never a success.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator


class OutputViolation(Exception):
    """A finished constrained reply that does not parse or does not satisfy its schema."""


def violations(value: Any, schema: dict[str, Any]) -> list[str]:
    """What is wrong with `value` against `schema` (empty when it is valid), most useful first."""
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    try:
        return [f"{_where(error.absolute_path)}{error.message}" for error in validator.iter_errors(value)]
    except RecursionError:  # a recursive schema and a value nested deeper than Python can follow
        return ["the reply is nested too deeply to be checked"]


def load_checked(text: str, schema: dict[str, Any], *, what: str) -> Any:
    """The JSON value of `text`, checked against `schema`; raises `OutputViolation` naming the problem."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise OutputViolation(f"the {what} is not complete JSON ({exc})") from exc
    problems = violations(value, schema)
    if problems:
        raise OutputViolation(f"the {what} does not satisfy its schema: {'; '.join(problems[:3])}")
    return value


def _where(path: Any) -> str:
    parts = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    return f"at ${parts}: " if parts else ""
