"""The loop guard and the budget-aware close, on the real tokenizer and real llguidance matchers."""

from __future__ import annotations

import warnings

import llguidance.llamacpp
import numpy as np
import pytest

from galerne.engines.llamacpp.closing import BudgetCloser, JsonCursor, TokenClasses
from galerne.engines.llamacpp.model import LlamaModel
from galerne.engines.llamacpp.repetition import ALLOWED_LENGTH, BASE, MULTIPLIER, penalise_repeats
from galerne.inference.constraints import JsonOutput
from galerne.structured.grammars import GrammarCache


@pytest.fixture(scope="module")
def classes(model: LlamaModel) -> TokenClasses:
    return TokenClasses(model.pieces, [model.is_end_of_generation(t) for t in range(model.num_vocab)])


@pytest.fixture(scope="module")
def grammars(model: LlamaModel) -> GrammarCache:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return GrammarCache(llguidance.llamacpp.lltokenizer_from_vocab(model.vocab))


def test_the_token_that_would_extend_a_repeat_is_penalised_more_the_longer_it_runs() -> None:
    unit = [11, 12, 13]
    logits = np.zeros(20, dtype=np.float32)
    penalise_repeats(logits, [5, *unit, *unit, 11, 12])  # ... 11 12 13 11 12 -> 13 would repeat
    assert logits[13] == pytest.approx(-MULTIPLIER * BASE ** (5 - ALLOWED_LENGTH))
    assert np.count_nonzero(logits) == 1
    fresh = np.zeros(20, dtype=np.float32)
    penalise_repeats(fresh, [1, 2, 3, 4, 5])
    assert not fresh.any()


def test_the_cursor_knows_when_it_is_inside_a_string() -> None:
    cursor = JsonCursor()
    cursor.feed(b'{"a":"x\\"y')
    assert cursor.is_in_string
    cursor.feed(b'"')
    assert not cursor.is_in_string


def test_the_estimate_counts_the_cheapest_way_to_close(
    grammars: GrammarCache, classes: TokenClasses, model: LlamaModel
) -> None:
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}},
              "required": ["tags"]}  # fmt: skip
    matcher = grammars.matcher(JsonOutput(schema))
    closer = BudgetCloser(classes)
    start = closer.estimate(matcher)
    assert 0 < start < 12  # {"tags":[ forced, then ]} or a short path like it
    written = model.tokenize('{"tags":["food","cuisine","foo', parse_special=False)
    assert matcher.consume_tokens(written)
    closer.follow(written)
    assert 0 < closer.estimate(matcher) < 6  # `"]}` and end
    closer.update(matcher, tokens_left=4)
    assert closer.is_closing


def test_an_opening_the_budget_cannot_close_is_vetoed_and_the_path_then_closes(
    grammars: GrammarCache, classes: TokenClasses, model: LlamaModel
) -> None:
    item = {"type": "object", "properties": {key: {"type": "string"} for key in "abc"}, "required": list("abc")}
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": item}}, "required": ["items"]}
    matcher = grammars.matcher(JsonOutput(schema))
    written = model.tokenize('{"items":[{"a":"x","b":"y","c":"z"}', parse_special=False)
    assert matcher.consume_tokens(written)
    closer = BudgetCloser(classes)
    closer.follow(written)
    [comma] = model.tokenize(",", parse_special=False)
    [bracket] = model.tokenize("]", parse_special=False)
    logits = np.zeros(classes.num_vocab, dtype=np.float32)
    assert not closer.veto(matcher, comma, logits.copy(), tokens_left=60)  # a new item fits in 60
    assert not closer.has_vetoed
    assert closer.veto(matcher, comma, logits, tokens_left=8)  # {"a":"","b":"","c":""} does not fit in 8
    assert logits[comma] == -np.inf and logits[bracket] == 0.0 and closer.has_vetoed
    closer.update(matcher, tokens_left=2)
    assert closer.is_closing
    steered = np.zeros(classes.num_vocab, dtype=np.float32)
    allowed = np.zeros(classes.num_vocab, dtype=bool)
    allowed[[comma, bracket]] = True
    closer.steer(steered, allowed, is_complete=False)
    assert np.isfinite(steered).sum() == 1 and np.isfinite(steered[bracket])  # the counted path: close
