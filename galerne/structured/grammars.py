"""llguidance grammars for constrained requests, compiled once per distinct constraint and tokenizer.

JSON is compact (no free whitespace): small models otherwise loop on spaces and newlines. `auto` tool
choice is a Lark grammar, "text that does not start with `[`, or a calls array", so the first token
decides and the rest is held to the choice. A grammar llguidance cannot compile is a 400 that says why;
nothing ever falls back to unconstrained text.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from threading import Lock
from typing import Any

import llguidance

from galerne.errors import InvalidRequestError
from galerne.inference.constraints import JsonOutput, OutputConstraint, ToolCallOutput, ToolChoice
from galerne.structured.schemas import json_output_schema, tool_calls_schema

_COMPACT = {"whitespace_flexible": False}
_TEXT_OR_CALLS = "start: TEXT | calls\nTEXT: /[^\\[](.|\\n)*/\ncalls: %json {schema}\n"


def grammar_source(constraint: OutputConstraint) -> str:
    """The llguidance grammar text for `constraint` (not yet checked against a tokenizer)."""
    if isinstance(constraint, JsonOutput):
        return _json_grammar(json_output_schema(constraint), param="response_format")
    schema = tool_calls_schema(constraint)
    if constraint.choice is not ToolChoice.AUTO:
        return _json_grammar(schema, param="tools")
    compact = {**schema, "x-guidance": _COMPACT}
    return llguidance.LLMatcher.grammar_from_lark(_TEXT_OR_CALLS.replace("{schema}", json.dumps(compact)))


def _json_grammar(schema: dict[str, Any], *, param: str) -> str:
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_COMPACT)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidRequestError(f"the JSON schema is not valid: {exc}", param=param) from exc


class GrammarCache:
    """Validated grammars for one tokenizer, keyed by constraint, least recently used dropped first."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, max_entries: int = 256) -> None:
        self._tokenizer = tokenizer
        self._max_entries = max_entries
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._lock = Lock()

    def grammar_for(self, constraint: OutputConstraint) -> str:
        """A grammar ready for `LLMatcher`; raises 400 naming llguidance's reason when it cannot compile."""
        key = _cache_key(constraint)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        grammar = grammar_source(constraint)
        error = llguidance.LLMatcher.validate_grammar(grammar, self._tokenizer)
        if error:
            param = "response_format" if isinstance(constraint, JsonOutput) else "tools"
            raise InvalidRequestError(f"the schema cannot be enforced: {error.strip()}", param=param)
        with self._lock:
            self._entries[key] = grammar
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return grammar

    def matcher(self, constraint: OutputConstraint) -> llguidance.LLMatcher:
        """A fresh matcher (one per request: it holds the parse state)."""
        matcher = llguidance.LLMatcher(self._tokenizer, self.grammar_for(constraint), log_level=0)
        if matcher.is_error():
            raise InvalidRequestError(f"the schema cannot be enforced: {matcher.get_error()}")
        return matcher


def _cache_key(constraint: OutputConstraint) -> str:
    if isinstance(constraint, JsonOutput):
        return f"json:{constraint.strict}:" + json.dumps(constraint.schema, sort_keys=True)
    assert isinstance(constraint, ToolCallOutput)
    tools = [[tool.name, tool.strict, tool.parameters] for tool in constraint.tools]
    shape = [constraint.choice.value, constraint.named, constraint.allows_parallel_calls, tools]
    return "tools:" + json.dumps(shape, sort_keys=True)
