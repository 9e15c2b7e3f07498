"""A deterministic 200-page PDF with one findable fact on a known page, for "a 200-page document still
answers through retrieval" (issue 13) and for the upload-to-searchable benchmark.

The text is the yearly log of a fictional harbour: chapters of ten pages, a section heading on every page,
and four paragraphs per page assembled from sentence templates with a seeded generator, so that every page
reads like prose, differs from the others, and is the same on every run. One sentence exists only on
`fact_page` (137 for 200 pages); `question` and `answer` (a verbatim snippet of it) check a retrieval.

Example::

    long = make_long_pdf(tmp_path / "harbour.pdf")
    document = extract(long.path.read_bytes(), long.path.name)
    assert any(long.answer in block.text and block.page == long.fact_page for block in document.blocks)
"""

from __future__ import annotations

import datetime
import random
from pathlib import Path
from typing import NamedTuple

from fpdf import FPDF

FACT = "The spare key to the tide gauge cabin on Pier 9 is kept in locker 4471 of the harbour office."
QUESTION = "Where can I find the spare key for the cabin with the tide gauge?"
ANSWER = "kept in locker 4471 of the harbour office"
_FIXED_DATE = datetime.datetime(2026, 1, 15, 9, 30, tzinfo=datetime.UTC)

_PLACES = [
    "the north quay",
    "the grain terminal",
    "the fishing basin",
    "the ferry ramp",
    "the dry dock",
    "the container yard",
    "the old lock",
    "the marina",
    "the breakwater",
    "the coal wharf",
]
_CREWS = [
    "the dredging crew",
    "the night pilots",
    "the mooring team",
    "the crane operators",
    "the divers",
    "the customs officers",
    "the harbour police",
    "the electricians",
    "the surveyors",
    "the tug masters",
]
_WORKS = [
    "replaced the fenders",
    "repainted the bollards",
    "checked the mooring chains",
    "cleared the silt",
    "renewed the signal lamps",
    "inspected the sheet piling",
    "tested the fire pumps",
    "resurfaced the access road",
    "repaired the gangway",
    "calibrated the weighbridge",
]
_REASONS = [
    "after the spring storms",
    "ahead of the cruise season",
    "at the request of the pilots",
    "following a routine survey",
    "because of heavy ice in February",
    "to meet the new insurance terms",
    "after a minor collision",
    "before the regatta",
    "as planned in the budget",
    "during the low tides",
]
_WEATHER = [
    "strong westerly gales",
    "thick morning fog",
    "heavy rain",
    "unusually calm seas",
    "late frost",
    "high spring tides",
    "summer heat",
    "persistent easterly winds",
]
_COMPARED = ["slightly more than", "slightly less than", "the same as"]
_SHIPS = [
    "Aurora",
    "Kestrel",
    "Northern Star",
    "Maria Luisa",
    "Skagen",
    "Bonaventure",
    "Grey Heron",
    "Valkyrie",
    "Saint Brendan",
    "Morning Light",
    "Albatross",
    "Helga",
]


class LongPdf(NamedTuple):
    path: Path
    num_pages: int
    fact_page: int
    question: str
    answer: str


def fact_page_for(pages: int) -> int:
    """Page 137 of 200, and the page at the same share of a shorter or longer document."""
    return max(1, round(pages * 137 / 200))


def make_long_pdf(path: Path, pages: int = 200) -> LongPdf:
    """Write the PDF to `path` (same bytes on every run) and say where its one unique fact is."""
    rng = random.Random(13)
    fact_page = fact_page_for(pages)
    pdf = FPDF(format="A4")
    pdf.set_creation_date(_FIXED_DATE)
    pdf.set_title("Port of Lindmoor: harbour works log")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(False)
    for page in range(1, pages + 1):
        pdf.add_page()
        if page % 10 == 1:
            pdf.set_font("Helvetica", "B", 18)
            pdf.multi_cell(
                0, 9, f"Part {page // 10 + 1}: works of weeks {page} to {page + 9}", new_x="LMARGIN", new_y="NEXT"
            )
            pdf.ln(3)
        pdf.set_font("Helvetica", "B", 14)
        pdf.multi_cell(0, 8, f"Week {page}: {rng.choice(_PLACES).capitalize()}", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
        pdf.set_font("Helvetica", "", 11)
        for number in range(4):
            text = _paragraph(rng, page)
            if page == fact_page and number == 2:
                text = f"{text} {FACT}"
            pdf.multi_cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
    if pdf.page_no() != pages:  # auto page break is off: a page that overflowed would print off its bottom
        raise AssertionError(f"wrote {pdf.page_no()} pages, expected {pages}")
    path.write_bytes(bytes(pdf.output()))
    return LongPdf(path, pages, fact_page, QUESTION, ANSWER)


def _paragraph(rng: random.Random, page: int) -> str:
    place, crew, work, reason = rng.choice(_PLACES), rng.choice(_CREWS), rng.choice(_WORKS), rng.choice(_REASONS)
    ship, other = rng.sample(_SHIPS, 2)
    hours, tonnes, metres = rng.randint(6, 96), rng.randint(120, 9_800), rng.randint(40, 380)
    sentences = [
        f"In week {page}, {crew} {work} at {place} {reason}.",
        f"The work took {hours} hours in all, in a week of {rng.choice(_WEATHER)}.",
        f"The {ship} unloaded {tonnes} tonnes of cargo at berth {rng.randint(1, 24)} while the {other} waited "
        f"{rng.randint(2, 14)} hours in the outer roads for a pilot.",
        f"Soundings along the {metres} metres of the channel showed a depth of {rng.randint(7, 15)}.{rng.randint(0, 9)}"
        f" metres at low water, {rng.choice(_COMPARED)} in the previous survey.",
    ]
    rng.shuffle(sentences)
    return " ".join(sentences[: rng.randint(3, 4)])
