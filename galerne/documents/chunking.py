"""Cutting a `Document` into passages along its structure, each small enough for the embedding model.

Fixed windows cut a table in two, glue the end of one section to the start of the next and lose which
section a sentence belongs to (Open WebUI's complaint, galerne issue 13). Here:

- a passage never spans two sections (the blocks under one heading path); a short section is a short passage;
- consecutive blocks of one section are packed together up to the budget;
- a block over the budget is split at sentence boundaries (sentencex, a multilingual rule-based segmenter),
  a table or code block at line breaks (a table repeats its first row in each part), a sentence that is still
  too long at spaces, never inside a word unless a single "word" is longer than the whole budget;
- each passage's text starts with its heading path, ``Title > Section > Subsection``, so that a passage keeps
  its context for the embedding model, for the lexical index and for the chat model that reads it.

The budget is in the caller's tokens (`count_tokens`, the embedding model's tokenizer), counted on the whole
passage text, heading path included.

Example::

    passages = chunk(document, max_tokens=200, count_tokens=lambda text: len(tokenizer.encode(text)))
    passages[3].text          # 'Staff handbook > Leave > Sick leave\\n\\nA doctor's note is needed after ...'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sentencex import segment

from galerne.documents.document import Block, Document

PATH_SEPARATOR = " > "
_MIN_MAX_TOKENS = 16
_PATH_SHARE = 0.5  # the heading path may take at most this share of a passage's budget


@dataclass(frozen=True, slots=True)
class Chunk:
    """One passage: `text` is what gets embedded and shown (heading path, blank line, body); `index` counts
    from 0 in document order; pages are 1-based and None for formats without pages.

    `body` is the text without its heading-path line, for rebuilding a document's text from its passages
    (`num_prefix_chars` says where it starts; the path line may be shortened, so it is not always
    `" > ".join(heading_path)`).
    """

    index: int
    text: str
    heading_path: tuple[str, ...]
    page_start: int | None
    page_end: int | None
    num_prefix_chars: int = 0

    @property
    def body(self) -> str:
        return self.text[self.num_prefix_chars :]


@dataclass(frozen=True, slots=True)
class _Unit:
    """A piece of a section's body that fits the budget, and how it joins the piece before it."""

    text: str
    page: int | None
    joiner: str


def chunk(
    document: Document,
    *,
    max_tokens: int,
    count_tokens: Callable[[str], int],
    language: str = "en",
) -> list[Chunk]:
    """The document's passages, each at most `max_tokens` by `count_tokens`, heading path included.

    `language` picks the sentence rules (ISO 639-1; unknown codes fall back to generic rules) used only
    when a block is over the budget.
    """
    if max_tokens < _MIN_MAX_TOKENS:
        raise ValueError(f"max_tokens must be at least {_MIN_MAX_TOKENS}, got {max_tokens}")
    chunks: list[Chunk] = []
    for path, blocks in _sections(document):
        prefix = _fitting_prefix(path, int(max_tokens * _PATH_SHARE), count_tokens)
        head = f"{prefix}\n\n" if prefix else ""

        def fits(body: str, head: str = head) -> bool:
            return count_tokens(head + body) <= max_tokens

        units = [unit for block in blocks for unit in _units(block, fits, language)]
        for group in _pack(units, fits):
            pages = [unit.page for unit in group if unit.page is not None]
            body = group[0].text + "".join(unit.joiner + unit.text for unit in group[1:])
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=head + body,
                    heading_path=path,
                    page_start=min(pages) if pages else None,
                    page_end=max(pages) if pages else None,
                    num_prefix_chars=len(head),
                )
            )
    return chunks


def _sections(document: Document) -> Iterator[tuple[tuple[str, ...], list[Block]]]:
    """Runs of non-heading blocks with the heading path above them (the title first, once)."""
    stack: list[tuple[int, str]] = []
    body: list[Block] = []

    def path() -> tuple[str, ...]:
        headings = [text for _, text in stack]
        if document.title and (not headings or headings[0] != document.title):
            headings.insert(0, document.title)
        return tuple(headings)

    for block in document.blocks:
        if block.kind == "heading" and block.text.strip():
            if body:
                yield path(), body
                body = []
            level = max(block.level, 1)
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, " ".join(block.text.split())))
        elif block.text.strip():
            body.append(block)
    if body:
        yield path(), body


def _fitting_prefix(path: tuple[str, ...], budget: int, count_tokens: Callable[[str], int]) -> str:
    """The heading path as one line, shortened from the left (then cut at a word) until it fits `budget`."""
    parts = list(path)
    while parts:
        line = PATH_SEPARATOR.join(parts)
        if count_tokens(line) <= budget:
            return line
        if len(parts) == 1:
            words = parts[0].split()
            size = _longest_fitting(words, " ", lambda text: count_tokens(text + " …") <= budget)
            return " ".join(words[:size]) + " …" if size else ""
        parts.pop(0)
    return ""


def _units(block: Block, fits: Callable[[str], bool], language: str) -> list[_Unit]:
    """The block whole when it fits, else its parts that each fit, split as gently as the block allows."""
    if fits(block.text):
        return [_Unit(block.text, block.page, "\n\n")]
    if block.kind in ("table", "code"):
        parts = _split_lines(block.text, fits, repeat_first=block.kind == "table")
        joiner = "\n"
    else:
        parts = _split_sentences(block.text, fits, language)
        joiner = " "
    return [_Unit(part, block.page, "\n\n" if index == 0 else joiner) for index, part in enumerate(parts)]


def _split_lines(text: str, fits: Callable[[str], bool], *, repeat_first: bool) -> list[str]:
    lines = [line for line in text.split("\n") if line.strip()]
    header = lines[0] if repeat_first and len(lines) > 1 and fits(lines[0] + "\n" + lines[1]) else None
    parts: list[str] = []
    current: list[str] = []
    for line in lines:
        candidate = [*current, line]
        if fits("\n".join(candidate)):
            current = candidate
            continue
        if current:
            parts.append("\n".join(current))
        current = [header, line] if header is not None and line != header else [line]
        if not fits("\n".join(current)):
            current = current[-1:]
            if not fits(line):
                parts.extend(_split_words(line, fits))
                current = []
    if current:
        parts.append("\n".join(current))
    return parts


def _split_sentences(text: str, fits: Callable[[str], bool], language: str) -> list[str]:
    """Sentences packed up to the budget; a sentence over it alone is split at spaces."""
    sentences = [sentence.strip() for sentence in segment(language, text) if sentence.strip()]
    parts: list[str] = []
    current = ""
    for sentence in sentences:
        candidate = f"{current} {sentence}" if current else sentence
        if fits(candidate):
            current = candidate
            continue
        if current:
            parts.append(current)
        if fits(sentence):
            current = sentence
        else:
            parts.extend(_split_words(sentence, fits))
            current = ""
    if current:
        parts.append(current)
    return parts


def _split_words(text: str, fits: Callable[[str], bool]) -> list[str]:
    """Runs of whole words that fit; a single word longer than the budget is cut into pieces that fit."""
    words = text.split()
    parts: list[str] = []
    start = 0
    while start < len(words):
        rest = words[start:]
        size = _longest_fitting(rest, " ", fits)
        if size == 0:
            parts.extend(_split_characters(rest[0], fits))
            size = 1
        else:
            parts.append(" ".join(rest[:size]))
        start += size
    return parts


def _split_characters(word: str, fits: Callable[[str], bool]) -> list[str]:
    parts: list[str] = []
    while word:
        size = max(_longest_fitting(word, "", fits), 1)
        parts.append(word[:size])
        word = word[size:]
    return parts


def _longest_fitting(items: Sequence[str], joiner: str, fits: Callable[[str], bool]) -> int:
    """The largest n with fits(joiner.join(items[:n])), by bisection (a longer text never fits better)."""
    low, high = 0, len(items)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(joiner.join(items[:middle])):
            low = middle
        else:
            high = middle - 1
    return low


def _pack(units: list[_Unit], fits: Callable[[str], bool]) -> Iterator[list[_Unit]]:
    """Consecutive units grouped greedily while the joined text fits."""
    group: list[_Unit] = []
    text = ""
    for unit in units:
        candidate = text + unit.joiner + unit.text if group else unit.text
        if group and not fits(candidate):
            yield group
            group, candidate = [], unit.text
        group.append(unit)
        text = candidate
    if group:
        yield group
