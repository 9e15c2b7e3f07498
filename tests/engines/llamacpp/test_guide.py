"""The guide's last word on a reply, with real llguidance matchers on the real tokenizer."""

from __future__ import annotations

import warnings

import llguidance
import llguidance.llamacpp
import numpy as np
import pytest

from galerne.engines.llamacpp.closing import TokenClasses
from galerne.engines.llamacpp.guide import GrammarGuide
from galerne.engines.llamacpp.model import LlamaModel
from galerne.inference.constraints import JsonOutput, ToolCallOutput, ToolChoice, ToolSpec
from galerne.inference.types import FinishReason, GenerationEvent
from galerne.structured.grammars import GrammarCache

ADD = ToolSpec("add", "", {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})


@pytest.fixture(scope="module")
def grammars(model: LlamaModel) -> GrammarCache:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return GrammarCache(llguidance.llamacpp.lltokenizer_from_vocab(model.vocab))


def _guide(grammars: GrammarCache, model: LlamaModel, constraint: JsonOutput | ToolCallOutput) -> GrammarGuide:
    ending = [model.is_end_of_generation(token) for token in range(model.num_vocab)]
    return GrammarGuide.for_constraint(grammars, constraint, TokenClasses(model.pieces, ending))


def _feed(guide: GrammarGuide, model: LlamaModel, text: str) -> None:
    """Write `text` through the guide as the engine would: one sampled token, then what the grammar forces."""
    rest = text.encode()
    while rest:
        token = model.tokenize(rest.decode(), parse_special=False)[0]
        forced = guide.accept(token)
        written = b"".join(model.pieces[t] for t in [token, *forced])
        assert rest.startswith(written)
        rest = rest[len(written) :]


def test_a_finished_reply_that_breaks_its_schema_is_withheld(grammars: GrammarCache, model: LlamaModel) -> None:
    guide = _guide(grammars, model, JsonOutput({"type": "object", "properties": {"n": {"type": "integer"}}}))
    event = guide.final_event(GenerationEvent('{"n":"x"}', 3, 4, FinishReason.STOP))
    assert event.finish_reason is FinishReason.ERROR and event.is_invalid_output and event.text == ""
    assert "'x' is not of type 'integer'" in (event.error or "")


def test_a_call_cut_mid_structure_is_marked_as_call_text_without_calls(
    grammars: GrammarCache, model: LlamaModel
) -> None:
    guide = _guide(grammars, model, ToolCallOutput((ADD,), ToolChoice.REQUIRED))
    _feed(guide, model, '[{"name":"add","arguments":{"a":')
    event = guide.final_event(GenerationEvent('[{"name":"add","arguments":{"a":', 3, 9, FinishReason.LENGTH))
    assert event.finish_reason is FinishReason.LENGTH and event.is_tool_call and event.tool_calls == ()


def test_a_complete_call_comes_back_typed(grammars: GrammarCache, model: LlamaModel) -> None:
    guide = _guide(grammars, model, ToolCallOutput((ADD,), ToolChoice.AUTO))
    text = '[{"name":"add","arguments":{"a":7}}]'
    assert guide.starts_tool_call(text[:1].encode())
    _feed(guide, model, text)
    event = guide.final_event(GenerationEvent(text, 3, 12, FinishReason.STOP))
    assert event.finish_reason is FinishReason.TOOL_CALLS
    assert [(call.name, call.arguments) for call in event.tool_calls] == [("add", '{"a": 7}')]


def test_a_text_reply_under_auto_is_left_alone_near_the_budget(grammars: GrammarCache, model: LlamaModel) -> None:
    guide = _guide(grammars, model, ToolCallOutput((ADD,), ToolChoice.AUTO))
    assert not guide.starts_tool_call(b"Hello")
    _feed(guide, model, "Hello there")
    guide.reader.push("Hello there")
    logits = np.zeros(model.num_vocab, dtype=np.float32)
    guide.mask(logits, tokens_left=1)
    assert not guide.is_closing and np.isfinite(logits).sum() > 1000  # not steered to end-of-text
