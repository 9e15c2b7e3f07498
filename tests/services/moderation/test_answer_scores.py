"""Reading the constrained answer's distribution off one next-token distribution."""

from __future__ import annotations

import math

import pytest

from galerne.services.moderation.classifier import answer_logprobs

WORDS = ("sexual", "selfharm", "safe", "hate", "health")


def test_a_word_gets_the_mass_of_the_tokens_that_begin_it_and_no_other() -> None:
    tokens = [(b"sex", math.log(0.2)), (b"sexual", math.log(0.1)), (b"self", math.log(0.05)), (b"s", math.log(0.3)),
              (b"h", math.log(0.1)), (b"hate", math.log(0.15)), (b"he", math.log(0.05)), (b"x", math.log(0.05))]
    scores = answer_logprobs(tokens, WORDS)
    assert scores["sexual"] == pytest.approx(math.log(0.3))  # "sex" + "sexual"; "s" begins three words
    assert scores["selfharm"] == pytest.approx(math.log(0.05))
    assert scores["hate"] == pytest.approx(math.log(0.15))  # "h" is shared with health
    assert scores["health"] == pytest.approx(math.log(0.05))  # "he"
    assert scores["safe"] == pytest.approx(math.log(0.05))  # no token of its own: the least likely one read


def test_tokens_that_are_not_whole_text_are_ignored() -> None:
    scores = answer_logprobs([(b"\xe2\x80", -0.1), (b"", -0.2), (b"hate", -3.0)], ("hate", "health"))
    assert scores == {"hate": -3.0, "health": -3.0}
