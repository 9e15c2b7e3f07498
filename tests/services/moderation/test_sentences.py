"""A streamed reply is held back one sentence at a time: released at sentence ends, never mid-word."""

from __future__ import annotations

from galerne.services.moderation.sentences import MAX_HELD_CHARACTERS, SentenceHold


def test_text_is_released_at_sentence_ends_only() -> None:
    hold = SentenceHold()
    assert hold.add("Paris is the capital", is_final=False) == ""
    assert hold.add(" of France. It is", is_final=False) == "Paris is the capital of France."
    assert hold.pending == " It is"
    assert hold.add(" big! Really? Yes", is_final=False) == " It is big! Really?"
    assert hold.add(" indeed", is_final=True) == " Yes indeed"
    assert hold.pending == ""


def test_numbers_addresses_and_quotes_do_not_end_a_sentence_early() -> None:
    hold = SentenceHold()
    assert hold.add("Pi is 3.14 and mail goes to a.b@example.org today", is_final=False) == ""
    assert hold.add(' He said "stop." Then', is_final=False).endswith('"stop."')


def test_a_line_break_ends_a_sentence_and_endless_text_is_released_at_a_space() -> None:
    hold = SentenceHold()
    assert hold.add("- first item\n- second", is_final=False) == "- first item\n"
    endless = "word " * (MAX_HELD_CHARACTERS // 5 + 10)
    released = hold.add(endless, is_final=False)
    assert released and released.endswith(" ") and len(hold.pending) < 10
