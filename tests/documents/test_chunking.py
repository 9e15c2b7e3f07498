"""Chunking: sections are never mixed, the budget always holds, long blocks split at sentences, never mid-word.

Two token counters: `words` (one token per word, easy to reason about) and `realistic` (words x 1.4 rounded
up, about what a WordPiece tokenizer like all-MiniLM-L6-v2's gives on English prose and a little under what
it gives on French or German, which is what the caller's real tokenizer will be).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from galerne.documents import Block, Chunk, Document, chunk, extract
from galerne.documents.chunking import PATH_SEPARATOR

FIXTURES = Path(__file__).parents[1] / "fixtures" / "documents"


def words(text: str) -> int:
    return len(text.split())


def realistic(text: str) -> int:
    return math.ceil(len(text.split()) * 1.4)


def body(piece: Chunk) -> str:
    assert piece.text == f"{PATH_SEPARATOR.join(piece.heading_path)}\n\n{piece.body}" or not piece.heading_path
    return piece.body


def sentence(number: int, size: int = 12) -> str:
    return " ".join([f"S{number}w{index}" for index in range(size - 1)] + [f"end{number}."])


def handbook() -> Document:
    return Document(
        title="Handbook",
        blocks=[
            Block("heading", "Leave", level=1),
            Block("paragraph", "Staff get 27 days.", page=1),
            Block("paragraph", "Five days carry over.", page=1),
            Block("heading", "Sick leave", level=2),
            Block("paragraph", "Call before nine.", page=2),
            Block("heading", "Travel", level=1),
            Block("list_item", "Rail by default.", page=2),
            Block("list_item", "Cars at 45p a mile.", page=3),
        ],
    )


def test_small_blocks_of_a_section_pack_and_sections_stay_apart() -> None:
    pieces = chunk(handbook(), max_tokens=200, count_tokens=words)
    assert [(piece.heading_path, body(piece)) for piece in pieces] == [
        (("Handbook", "Leave"), "Staff get 27 days.\n\nFive days carry over."),
        (("Handbook", "Leave", "Sick leave"), "Call before nine."),
        (("Handbook", "Travel"), "Rail by default.\n\nCars at 45p a mile."),
    ]
    assert [piece.index for piece in pieces] == [0, 1, 2]
    assert [(piece.page_start, piece.page_end) for piece in pieces] == [(1, 1), (2, 2), (2, 3)]


def test_text_starts_with_the_heading_path() -> None:
    pieces = chunk(handbook(), max_tokens=200, count_tokens=words)
    assert pieces[1].text == f"Handbook{PATH_SEPARATOR}Leave{PATH_SEPARATOR}Sick leave\n\nCall before nine."


def test_title_equal_to_first_heading_appears_once() -> None:
    document = Document(title="Guide", blocks=[Block("heading", "Guide", 1), Block("paragraph", "Intro.")])
    assert chunk(document, max_tokens=50, count_tokens=words)[0].heading_path == ("Guide",)


def test_no_title_no_heading_means_no_prefix() -> None:
    document = Document(title=None, blocks=[Block("paragraph", "Just text.")])
    [piece] = chunk(document, max_tokens=50, count_tokens=words)
    assert piece.text == piece.body == "Just text." and piece.heading_path == () and piece.page_start is None


@pytest.mark.parametrize("count_tokens", [words, realistic])
@pytest.mark.parametrize("max_tokens", [20, 64, 200])
def test_budget_holds_on_every_fixture(count_tokens: object, max_tokens: int) -> None:
    for path in sorted(FIXTURES.glob("*.*")):
        if path.suffix not in (".md", ".txt", ".html", ".pdf", ".docx"):
            continue
        document = extract(path.read_bytes(), path.name)
        pieces = chunk(document, max_tokens=max_tokens, count_tokens=count_tokens)  # type: ignore[arg-type]
        assert pieces, path.name
        assert all(count_tokens(piece.text) <= max_tokens for piece in pieces), path.name  # type: ignore[operator]
        # Nothing is lost: every word of the body text is in some passage, in order (tables aside, whose
        # first row is repeated in each part of a split table).
        expected = _words_outside_tables("\n".join(b.text for b in document.blocks if b.kind != "heading"))
        got = _words_outside_tables("\n".join(piece.body for piece in pieces))
        if max_tokens >= 64:
            assert got == expected, path.name


def _words_outside_tables(text: str) -> list[str]:
    return " ".join(line for line in text.split("\n") if " | " not in line).split()


def test_long_paragraph_splits_at_sentence_boundaries() -> None:
    paragraph = " ".join(sentence(number) for number in range(10))  # 10 sentences of 12 words
    document = Document(title="T", blocks=[Block("paragraph", paragraph, page=4)])
    pieces = chunk(document, max_tokens=40, count_tokens=words)  # "T" + 3 sentences = 37 words
    assert [body(piece).split()[0] for piece in pieces] == ["S0w0", "S3w0", "S6w0", "S9w0"]
    for piece in pieces:
        assert body(piece).endswith(".")
        assert words(piece.text) <= 40
        assert (piece.page_start, piece.page_end) == (4, 4)


def test_real_sentences_in_french_keep_abbreviations() -> None:
    text = (
        "M. Dupont a signé le contrat le 3 mars. Il a payé 4,20 € par mois, soit env. 50 € par an. "
        "Le service client répond du lundi au samedi. La résiliation est possible après 24 mois. "
    ) * 3
    document = Document(title=None, blocks=[Block("paragraph", text.strip())])
    pieces = chunk(document, max_tokens=30, count_tokens=realistic, language="fr")
    assert len(pieces) > 1
    for piece in pieces:
        assert piece.text[0].isupper() and piece.text.endswith(".")
        assert not piece.text.startswith("Dupont")  # "M." is not the end of a sentence
    assert " ".join(piece.text for piece in pieces) == " ".join(text.split())


def test_sentence_over_budget_splits_between_words() -> None:
    long_sentence = " ".join(f"word{index}" for index in range(100)) + "."
    pieces = chunk(Document(None, [Block("paragraph", long_sentence)]), max_tokens=30, count_tokens=words)
    assert [len(piece.text.split()) for piece in pieces] == [30, 30, 30, 10]
    assert " ".join(piece.text for piece in pieces) == long_sentence


def test_single_huge_word_is_cut_to_fit() -> None:
    blob = "x" * 500
    pieces = chunk(Document(None, [Block("paragraph", blob)]), max_tokens=20, count_tokens=lambda t: len(t) // 10)
    assert "".join(piece.text for piece in pieces) == blob
    assert all(len(piece.text) // 10 <= 20 for piece in pieces)


def test_table_stays_whole_when_it_fits() -> None:
    table = "Day | Hours\nMon | 9-17\nTue | 9-17\nSat | 10-13"
    document = Document(
        title="Hours",
        blocks=[Block("paragraph", sentence(1, 10)), Block("table", table), Block("paragraph", sentence(2, 10))],
    )
    pieces = chunk(document, max_tokens=20, count_tokens=words)  # path 1 + table 12 + sentence 10 > 20
    assert [body(piece) for piece in pieces] == [sentence(1, 10), table, sentence(2, 10)]


def test_big_table_splits_by_rows_and_repeats_its_header() -> None:
    rows = ["Name | Role | Room"] + [f"Person{index} | Role{index} | R{index}" for index in range(20)]
    document = Document(title=None, blocks=[Block("table", "\n".join(rows))])
    pieces = chunk(document, max_tokens=25, count_tokens=words)
    assert len(pieces) > 1
    for piece in pieces:
        lines = piece.text.split("\n")
        assert lines[0] == "Name | Role | Room"
        assert all(" | " in line for line in lines)
        assert words(piece.text) <= 25
    seen = [line for piece in pieces for line in piece.text.split("\n")[1:]]
    assert seen == rows[1:] or [rows[1], *seen] == rows[1:]


def test_code_splits_at_line_breaks() -> None:
    code = "\n".join(f"step_{index}(argument_{index})" for index in range(50))
    pieces = chunk(Document(None, [Block("code", code)]), max_tokens=16, count_tokens=lambda t: len(t.split("\n")))
    assert "\n".join(piece.text for piece in pieces) == code
    assert [len(piece.text.split("\n")) for piece in pieces] == [16, 16, 16, 2]


def test_long_heading_path_is_shortened_from_the_left() -> None:
    blocks = [Block("heading", f"Part {level} " + "long words " * 4, level=level) for level in range(1, 6)]
    document = Document(title="A very long document title", blocks=[*blocks, Block("paragraph", "Body text.")])
    [piece] = chunk(document, max_tokens=30, count_tokens=words)
    assert piece.heading_path[0] == "A very long document title" and len(piece.heading_path) == 6
    prefix = piece.text[: piece.num_prefix_chars].strip()
    assert piece.body == "Body text."
    assert prefix.endswith("Part 5 long words long words long words long words")
    assert words(prefix) <= 15 and words(piece.text) <= 30


def test_section_boundaries_hold_on_a_real_document() -> None:
    document = extract((FIXTURES / "guide_fr.docx").read_bytes(), "guide_fr.docx")
    pieces = chunk(document, max_tokens=200, count_tokens=realistic)
    paths = [piece.heading_path for piece in pieces]
    assert ("Guide de voyage : la presqu'île de Kervarec", "À voir et à faire", "L'île aux Moines") in paths
    for piece in pieces:  # a passage holds text of its own section only
        section = [b.text for b in _section_blocks(document, piece.heading_path)]
        assert all(part in section for part in body(piece).split("\n\n"))


def _section_blocks(document: Document, path: tuple[str, ...]) -> list[Block]:
    stack: list[tuple[int, str]] = []
    found: list[Block] = []
    for block in document.blocks:
        if block.kind == "heading":
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, block.text))
        elif (document.title, *[text for _, text in stack]) == path:
            found.append(block)
    return found


def test_pdf_chunks_carry_their_pages() -> None:
    document = extract((FIXTURES / "manual_en.pdf").read_bytes(), "manual_en.pdf")
    pieces = chunk(document, max_tokens=200, count_tokens=realistic)
    walk = next(piece for piece in pieces if "walk assist" in piece.text)
    warranty = next(piece for piece in pieces if "Warranty" in piece.heading_path)
    assert (walk.page_start, walk.page_end) == (1, 2)  # the section runs over the page break
    assert (warranty.page_start, warranty.page_end) == (2, 2)


def test_budget_must_leave_room_for_text() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        chunk(handbook(), max_tokens=4, count_tokens=words)
