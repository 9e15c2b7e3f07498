"""The strict bases every request schema inherits, and the bounds of what storage and engines can hold.

Request models are strict, as on la Plateforme: an unknown field is refused, and so is a value of the
wrong JSON type (`"max_tokens": "10"`, `"stream": "yes"`) — the official SDKs always send the right
types, so coercing would only hide a client's bug. Numbers are bounded by what the database and the
engines can store, so an oversized value is a 422 naming the bound, never an overflow deep inside.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# Integer columns and llama.cpp/vLLM token counts are 32-bit; BIGINT columns 64-bit; seeds unsigned 64-bit.
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
MAX_UINT64 = 2**64 - 1
# Redis's Lua scripts count in doubles, which hold integers exactly up to 2^53.
MAX_EXACT_FLOAT_INT = 2**53

# The pydantic error type `galerne.api.errors` answers with a 400, not a 422: the body matches the schema,
# but its text is not Unicode any encoder can take.
INVALID_UNICODE = "invalid_unicode"


class StrictModel(BaseModel):
    """Request-side model: unknown fields, wrong JSON types and infinities are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class RequestBody(StrictModel):
    """A whole request body: refused at once if any string or key in it is not valid Unicode.

    JSON can carry a lone surrogate (`"a\\ud800b"`); Python keeps it in a `str`, and it only fails
    when the text is encoded for the tokeniser, a grammar or the database — as a 500. Checking the
    whole body here covers every string that can reach a prompt, a grammar or storage at once.
    """

    @model_validator(mode="before")
    @classmethod
    def _check_unicode(cls, data: Any) -> Any:
        problem = find_invalid_unicode(data)
        if problem is not None:
            raise PydanticCustomError(INVALID_UNICODE, problem.message, {"param": problem.param})
        return data


class WireModel(BaseModel):
    """Response-side model: serialised as is, fields in declaration order."""

    model_config = ConfigDict(extra="forbid")


class InvalidText(NamedTuple):
    param: str  # the field, as `messages[0].content`
    message: str  # what is wrong and how to fix it


def find_invalid_unicode(value: Any) -> InvalidText | None:
    """Find the first string or key of a parsed JSON value that holds a lone surrogate; None if none does.

    Example: ``find_invalid_unicode({"messages": [{"content": "a\\ud800b"}]})`` names
    ``messages[0].content``. The walk is iterative: a deeply nested body cannot overflow the stack.
    """
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            position = _lone_surrogate_at(item)
            if position is not None:
                return _describe(path, item, position, "is not valid Unicode")
        elif isinstance(item, dict):
            children: list[tuple[str, Any]] = []
            for key, child in item.items():
                key_text = str(key)
                position = _lone_surrogate_at(key_text)
                if position is not None:
                    return _describe(path, key_text, position, "has a key that is not valid Unicode")
                children.append((f"{path}.{key_text}" if path else key_text, child))
            pending.extend(reversed(children))  # popped last-in first: reversed keeps document order
        elif isinstance(item, list):
            pending.extend((f"{path}[{index}]", item[index]) for index in range(len(item) - 1, -1, -1))
    return None


def _lone_surrogate_at(text: str) -> int | None:
    """Where the first lone surrogate is: UTF-8 encoding refuses exactly those, at C speed (measured:
    12 to 20 ms for 8 MB of non-ASCII text, against 56 ms for a regex search); ASCII text is skipped in O(1)."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _describe(path: str, text: str, position: int, problem: str) -> InvalidText:
    code = f"\\u{ord(text[position]):04x}"
    message = (
        f"{path or 'the request body'} {problem}: it holds a lone surrogate ({code}) at character "
        f"{position}; send UTF-8 text, and write a character beyond U+FFFF as one escaped surrogate "
        "pair (\\ud83d\\ude00), never half of one"
    )
    return InvalidText(path or "body", message)


def _as_utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError as exc:
        raise ValueError("the date is out of range once converted to UTC (years 1 to 9999)") from exc


# An ISO 8601 string or a datetime; naive means UTC. Strict mode would refuse strings in Python mode.
UtcDateTime = Annotated[datetime, Field(strict=False), AfterValidator(_as_utc)]
