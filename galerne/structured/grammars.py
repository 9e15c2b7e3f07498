"""llguidance grammars for constrained requests, compiled once per distinct constraint and tokenizer.

JSON is compact (no free whitespace): small models otherwise loop on spaces and newlines. `auto` tool
choice is "text, or a calls array" (`tool_format` owns that grammar), so the first token decides and
the rest is held to the choice. A grammar llguidance cannot compile is a 400 that says why;
nothing ever falls back to unconstrained text.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from threading import Lock
from typing import Any

import llguidance
import llguidance.numpy as lnp

from galerne.errors import InvalidRequestError
from galerne.inference.constraints import JsonOutput, OutputConstraint, ToolCallOutput, ToolChoice
from galerne.structured import tool_format
from galerne.structured.refusals import plain_reason
from galerne.structured.schemas import json_output_schema, tool_calls_schema

_COMPACT = {"whitespace_flexible": False}


def grammar_source(constraint: OutputConstraint) -> str:
    """The llguidance grammar text for `constraint` (not yet checked against a tokenizer)."""
    if isinstance(constraint, JsonOutput):
        return _json_grammar(json_output_schema(constraint), param="response_format")
    schema = tool_calls_schema(constraint)
    if constraint.choice is not ToolChoice.AUTO:
        return _json_grammar(schema, param="tools")
    return tool_format.text_or_calls_grammar({**schema, "x-guidance": _COMPACT})


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
        """A grammar ready for `LLMatcher`; raises 400 saying what cannot be enforced when it cannot compile."""
        key = _cache_key(constraint)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        try:
            grammar = grammar_source(constraint)
        except InvalidRequestError as exc:
            exc.param = exc.param or _param(constraint)
            raise
        error = llguidance.LLMatcher.validate_grammar(grammar, self._tokenizer) or _first_step_error(
            llguidance.LLMatcher(self._tokenizer, grammar, log_level=0), self._tokenizer.vocab_size
        )
        if error:
            raise InvalidRequestError(f"the schema cannot be enforced: {plain_reason(error)}", param=_param(constraint))
        with self._lock:
            self._entries[key] = grammar
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return grammar

    def matcher(self, constraint: OutputConstraint) -> llguidance.LLMatcher:
        """A fresh matcher (one per request: it holds the parse state)."""
        matcher = llguidance.LLMatcher(self._tokenizer, self.grammar_for(constraint), log_level=0)
        if matcher.is_error():
            reason = plain_reason(matcher.get_error())
            raise InvalidRequestError(f"the schema cannot be enforced: {reason}", param=_param(constraint))
        return matcher


def _first_step_error(matcher: llguidance.LLMatcher, vocab_size: int) -> str:
    """Consume what the grammar forces at the start, then compute one mask: a grammar that fails there
    (a lexer that blows up on a huge pattern, a schema that admits nothing) is refused now, with a 400,
    instead of failing while decoding or ending in an empty reply."""
    forced = matcher.compute_ff_tokens()
    if forced:
        matcher.consume_tokens(forced)
    if not matcher.is_error():
        lnp.fill_next_token_bitmask(matcher, lnp.allocate_token_bitmask(1, vocab_size), 0)
    if matcher.is_error():
        return matcher.get_error()
    if matcher.is_stopped() and not matcher.is_accepting():
        return "NoExtensionBias"
    return ""


def _param(constraint: OutputConstraint) -> str:
    return "response_format" if isinstance(constraint, JsonOutput) else "tools"


def _cache_key(constraint: OutputConstraint) -> str:
    if isinstance(constraint, JsonOutput):
        return f"json:{constraint.strict}:" + json.dumps(constraint.schema, sort_keys=True)
    assert isinstance(constraint, ToolCallOutput)
    tools = [[tool.name, tool.strict, tool.parameters] for tool in constraint.tools]
    shape = [constraint.choice.value, constraint.named, constraint.allows_parallel_calls, tools]
    return "tools:" + json.dumps(shape, sort_keys=True)
