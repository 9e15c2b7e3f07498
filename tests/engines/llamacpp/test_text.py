"""TextAssembler: token bytes in, complete text out, stop strings held back and never emitted."""

from __future__ import annotations

from galerne.engines.llamacpp.text import TextAssembler


def _feed(assembler: TextAssembler, pieces: list[bytes]) -> tuple[list[str], bool]:
    """Push pieces until a stop hits; returns the texts emitted per push and whether a stop hit."""
    emitted: list[str] = []
    for piece in pieces:
        text, hit = assembler.push(piece)
        emitted.append(text)
        if hit:
            return emitted, True
    return emitted, False


def test_without_stop_strings_text_is_released_at_once() -> None:
    assembler = TextAssembler(())
    assert assembler.push(b"Hello") == ("Hello", False)
    assert assembler.push(b", world") == (", world", False)
    assert assembler.flush() == ""


def test_multibyte_character_split_across_pieces_is_released_whole() -> None:
    encoded = "é€😀".encode()  # 2 + 3 + 4 bytes
    assembler = TextAssembler(())
    outputs = [assembler.push(encoded[index : index + 1])[0] for index in range(len(encoded))]
    # Nothing is released until a character is complete, and never a replacement character.
    assert outputs == ["", "é", "", "", "€", "", "", "", "😀"]
    assert "\ufffd" not in "".join(outputs)


def test_multibyte_split_with_stop_strings_configured() -> None:
    encoded = "naïve".encode()
    assembler = TextAssembler(("STOP",))
    first, _ = assembler.push(encoded[:3])  # "na" + first byte of "ï"
    second, _ = assembler.push(encoded[3:])
    assert first == "na"
    assert second == "ïve"


def test_stop_string_spanning_pieces_is_not_emitted_nor_anything_after_it() -> None:
    assembler = TextAssembler(("</answer>",))
    emitted, hit = _feed(assembler, [b"The answer is 4", b"</ans", b"wer> and then", b" more"])
    assert hit is True
    assert "".join(emitted) == "The answer is 4"
    assert "<" not in "".join(emitted)
    # the push that completed the stop returns only what precedes the stop string
    assert emitted[-1] == ""
    assert len(emitted) == 3  # the fourth piece was never needed


def test_text_before_stop_in_the_same_piece_is_emitted() -> None:
    assembler = TextAssembler(("\n\n",))
    assert assembler.push(b"first line\n") == ("first line", False)
    assert assembler.push(b"\nsecond") == ("", True)


def test_stop_string_split_across_multibyte_pieces() -> None:
    stop = "—END"
    encoded = ("ok" + stop + "tail").encode()
    assembler = TextAssembler((stop,))
    emitted, hit = _feed(assembler, [encoded[index : index + 1] for index in range(len(encoded))])
    assert hit is True
    assert "".join(emitted) == "ok"


def test_partial_stop_prefix_is_held_then_released_when_not_a_stop() -> None:
    assembler = TextAssembler(("<|end|>",))
    text, hit = assembler.push(b"a <|e")
    assert (text, hit) == ("a ", False)  # "<|e" could still become the stop string
    text, hit = assembler.push(b"nvelope")
    assert (text, hit) == ("<|envelope", False)
    assert assembler.flush() == ""


def test_held_prefix_keeps_only_the_part_that_can_still_start_a_stop() -> None:
    assembler = TextAssembler(("abc",))
    assert assembler.push(b"xab") == ("x", False)
    # "aba" cannot be "abc"; but its end "a" still can begin it
    assert assembler.push(b"a") == ("ab", False)
    assert assembler.push(b"bc") == ("", True)


def test_earliest_of_several_stop_strings_wins() -> None:
    # "world" is listed first but "lo" occurs earlier in the text
    assembler = TextAssembler(("world", "lo"))
    assert assembler.push(b"hello world") == ("hel", True)


def test_earliest_stop_wins_when_both_are_in_one_push() -> None:
    assembler = TextAssembler(("END", "STOP"))
    assert assembler.push(b"alpha STOP beta END") == ("alpha ", True)


def test_held_stop_completed_before_a_later_stop_in_the_same_piece() -> None:
    assembler = TextAssembler(("STOP", "END"))
    assert assembler.push(b"alpha EN") == ("alpha ", False)
    assert assembler.push(b"D beta STOP") == ("", True)


def test_longest_possible_prefix_among_several_stops_is_held() -> None:
    assembler = TextAssembler(("xyz", "yzzz"))
    # "yzz" is the start of "yzzz" while only "yz" could start "xyz" -> hold the longer one
    assert assembler.push(b"ayzz") == ("a", False)
    assert assembler.push(b"z!") == ("", True)


def test_flush_returns_the_held_back_prefix() -> None:
    assembler = TextAssembler(("###",))
    assert assembler.push(b"result ##") == ("result ", False)
    assert assembler.flush() == "##"
    assert assembler.flush() == ""  # nothing is returned twice


def test_flush_replaces_an_incomplete_trailing_character() -> None:
    assembler = TextAssembler(())
    assert assembler.push("ok€".encode()[:-1]) == ("ok", False)
    assert assembler.flush() == "\ufffd"


def test_invalid_bytes_are_replaced_not_raised() -> None:
    assembler = TextAssembler(())
    text, hit = assembler.push(b"a\xffb")
    assert (text, hit) == ("a\ufffdb", False)


def test_leading_spaces_of_a_reply_are_dropped_when_asked_and_only_those() -> None:
    assembler = TextAssembler(("\nQuestion:",), strips_leading_spaces=True)
    emitted, hit = _feed(assembler, [b" ", b" Paris", b" is", b" nice.", b"\nQuestion:"])
    assert "".join(emitted) == "Paris is nice." and hit
    assert TextAssembler(()).push(b" Paris") == (" Paris", False)
