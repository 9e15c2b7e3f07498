"""llguidance's reasons for refusing a schema, in words a client can act on.

llguidance explains itself well but for its own users: it suggests options a Galerne client cannot
reach (`coerce_one_of`), and a failure while decoding carries its internal parser state. Every
message that reaches a client goes through `plain_reason`: internals are cut, known reasons are
reworded into what to change, and anything else keeps only its first line.
"""

from __future__ import annotations

import re

from galerne.structured.schemas import ENFORCED_FORMATS

_MAX_REASON = 300
_ONE_OF = (
    "`oneOf` is enforced only when its branches cannot overlap: give them different `type`s, or a property "
    "that every branch requires with a different `const` or `enum` in each (a discriminator). If more than one "
    "branch may match, use `anyOf` instead"
)
_TOO_LARGE = (
    "the schema expands beyond what the grammar engine can build (usually a `pattern` with a large repetition "
    "count such as `{1000000}`, or very large length limits); use smaller counts or bounds"
)
_REWORDED: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"oneOf constraints are not supported"), _ONE_OF),
    (re.compile(r"too many expressions|too many states|lexer error|max_lexer_states|size limit", re.I), _TOO_LARGE),
    (re.compile(r"not present in a registry|retrieving it failed"),
     "only `$ref`s inside the schema (`#/$defs/...`) are supported; copy the referenced schema into `$defs`"),
    (re.compile(r"NoExtensionBias|no tokens? (are )?allowed|grammar is empty", re.I),
     "no JSON value satisfies the schema"),
)  # fmt: skip
_MISSING_POINTER = re.compile(r"Pointer '(?P<pointer>[^']*)' does not exist")
_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[(?P<keys>[^\]]*)\]")
_UNKNOWN_FORMAT = re.compile(r"Unknown format: (?P<format>\S+)")
_REGEX_ERROR = re.compile(r"regex parse error:.*?error: (?P<reason>[^\n]+)", re.S)
_UNSATISFIABLE = re.compile(r"Unsatisfiable schema: (?P<reason>[^\n]+)")
_INTERNALS = re.compile(r"<state>.*|<grammar>.*|\n\s*while processing.*", re.S)


def plain_reason(error: str) -> str:
    """One short sentence saying what in the schema cannot be enforced, never llguidance's internals."""
    for pattern, reason in _REWORDED:
        if pattern.search(error):
            return reason
    missing = _MISSING_POINTER.search(error)
    if missing:
        return f"a `$ref` points to `#{missing['pointer']}`, which the schema does not define; add it under `$defs`"
    unimplemented = _UNIMPLEMENTED.search(error)
    if unimplemented:
        keys = ", ".join(f"`{key.strip(' ' + chr(34))}`" for key in unimplemented["keys"].split(","))
        return (
            f"{keys} cannot be enforced while decoding (the grammar engine does not implement it); remove it "
            "from the schema and check it on your side"
        )
    unknown_format = _UNKNOWN_FORMAT.search(error)
    if unknown_format:
        return (
            f"format {unknown_format['format']} cannot be enforced (supported: {', '.join(ENFORCED_FORMATS)}); "
            "remove `format` or describe the value with a `pattern`"
        )
    regex = _REGEX_ERROR.search(error)
    if regex:
        return f"a `pattern` uses a regular-expression feature that is not supported: {regex['reason'].strip()}"
    unsatisfiable = _UNSATISFIABLE.search(error)
    if unsatisfiable:
        return f"no JSON value satisfies the schema: {unsatisfiable['reason'].strip()}"
    first_line = _INTERNALS.sub("", error).strip().split("\n", 1)[0]
    return first_line[:_MAX_REASON] or "the grammar engine refused it"
