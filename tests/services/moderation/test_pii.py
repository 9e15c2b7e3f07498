"""The PII detectors scored on a hand-labelled set in the five languages (tests/fixtures/moderation/
pii_cases.jsonl: real-shaped values with valid checksums, and hard negatives that only a checksum or a
numbering plan tells apart), then masking and overlap resolution case by case."""

from __future__ import annotations

import doctest
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from galerne.services.moderation import pii as pii_module
from galerne.services.moderation.pii import PiiKind, PiiMatch, find_pii, mask_pii

CASES_PATH = Path(__file__).parents[2] / "fixtures" / "moderation" / "pii_cases.jsonl"
LANGUAGES = ("en", "fr", "de", "es", "it")
MIN_PRECISION = 0.95
MIN_RECALL = 0.95

Span = tuple[PiiKind, int, int]


@dataclass(frozen=True)
class Case:
    lang: str
    text: str
    expected: frozenset[Span]


def load_cases() -> list[Case]:
    cases = []
    for line in CASES_PATH.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        spans = set()
        for pii in row["pii"]:
            start = row["text"].index(pii["value"])
            spans.add((PiiKind(pii["kind"]), start, start + len(pii["value"])))
        cases.append(Case(row["lang"], row["text"], frozenset(spans)))
    return cases


def test_the_labelled_set_is_sound() -> None:
    """At least 100 cases, 15 per language, every kind present, hard negatives included, and each labelled
    value found exactly once in its text (so its span is unambiguous)."""
    rows = [json.loads(line) for line in CASES_PATH.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 100
    per_language = Counter(row["lang"] for row in rows)
    assert set(per_language) == set(LANGUAGES)
    assert min(per_language.values()) >= 15, per_language
    assert {pii["kind"] for row in rows for pii in row["pii"]} == {kind.value for kind in PiiKind}
    assert sum(1 for row in rows if not row["pii"]) >= 30
    for row in rows:
        for pii in row["pii"]:
            assert row["text"].count(pii["value"]) == 1, row


def test_precision_and_recall_on_the_labelled_set() -> None:
    """A detection counts when its kind and exact span agree with the label."""
    true_positives: Counter[PiiKind] = Counter()
    false_positives: Counter[PiiKind] = Counter()
    false_negatives: Counter[PiiKind] = Counter()
    errors = []
    for case in load_cases():
        found = {(match.kind, match.start, match.end) for match in find_pii(case.text)}
        for kind, _, _ in found & case.expected:
            true_positives[kind] += 1
        for kind, start, end in found - case.expected:
            false_positives[kind] += 1
            errors.append(f"  extra  {kind:<11} {case.text[start:end]!r} in {case.text!r}")
        for kind, start, end in case.expected - found:
            false_negatives[kind] += 1
            errors.append(f"  missed {kind:<11} {case.text[start:end]!r} in {case.text!r}")

    lines = [f"{'kind':<12} {'precision':>9} {'recall':>7} {'tp':>4} {'fp':>4} {'fn':>4}"]
    for kind in [*PiiKind, None]:
        tp = true_positives.total() if kind is None else true_positives[kind]
        fp = false_positives.total() if kind is None else false_positives[kind]
        fn = false_negatives.total() if kind is None else false_negatives[kind]
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        lines.append(f"{kind or 'overall':<12} {precision:>9.3f} {recall:>7.3f} {tp:>4} {fp:>4} {fn:>4}")
    report = "\n".join([*lines, *errors])
    print(report)

    tp, fp, fn = true_positives.total(), false_positives.total(), false_negatives.total()
    assert _ratio(tp, tp + fp) >= MIN_PRECISION, report
    assert _ratio(tp, tp + fn) >= MIN_RECALL, report


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 1.0


@pytest.mark.parametrize(
    ("valid", "invalid", "kind", "detail"),
    [
        ("FR76 3000 6000 0112 3456 7890 189", "FR76 3000 6000 0112 3456 7890 188", PiiKind.IBAN, "IBAN"),
        ("4111 1111 1111 1111", "4111 1111 1111 1112", PiiKind.CARD, "Visa"),
        ("378282246310005", "378282246310006", PiiKind.CARD, "Amex"),
        ("1 85 05 78 006 084 91", "1 85 05 78 006 084 92", PiiKind.NATIONAL_ID, "FR NIR"),
        ("3023217600053", "3023217600054", PiiKind.NATIONAL_ID, "FR NIF"),
        ("36 574 261 809", "36 574 261 808", PiiKind.NATIONAL_ID, "DE IdNr"),
        ("12345678Z", "12345678A", PiiKind.NATIONAL_ID, "ES DNI"),
        ("X1234567L", "X1234567M", PiiKind.NATIONAL_ID, "ES NIE"),
        ("RSSMRA85T10A562S", "RSSMRA85T10A562T", PiiKind.NATIONAL_ID, "IT codice fiscale"),
        ("9434765919", "9434765918", PiiKind.NATIONAL_ID, "GB NHS"),
        ("536-90-4399", "666-90-4399", PiiKind.NATIONAL_ID, "US SSN"),
        ("912-70-1234", "912-40-1234", PiiKind.NATIONAL_ID, "US ITIN"),
    ],
)
def test_a_checksum_failure_is_not_reported(valid: str, invalid: str, kind: PiiKind, detail: str) -> None:
    """The same shape with one digit changed: found with the right check digit, ignored without it."""
    text = "Reference: {} (keep it safe)."
    [match] = find_pii(text.format(valid))
    assert (match.kind, match.detail) == (kind, detail)
    assert text.format(valid)[match.start : match.end] == valid
    assert valid not in match.detail
    assert [match for match in find_pii(text.format(invalid)) if match.kind is kind] == []


def test_masking_replaces_each_match_at_its_offsets() -> None:
    text = (
        "Mail ana@example.org, phone 06 12 34 56 78, IBAN DE89 3704 0044 0532 0130 00, card 5555-5555-5555-4444,"
        " DNI 12345678Z."
    )
    matches = find_pii(text)
    assert [(match.kind, text[match.start : match.end]) for match in matches] == [
        (PiiKind.EMAIL, "ana@example.org"),
        (PiiKind.PHONE, "06 12 34 56 78"),
        (PiiKind.IBAN, "DE89 3704 0044 0532 0130 00"),
        (PiiKind.CARD, "5555-5555-5555-4444"),
        (PiiKind.NATIONAL_ID, "12345678Z"),
    ]
    expected = "Mail [EMAIL], phone [PHONE], IBAN [IBAN], card [CARD], DNI [ID]."
    assert mask_pii(text) == expected
    assert mask_pii(text, matches) == expected
    assert mask_pii(text, list(reversed(matches))) == expected


def test_masking_at_the_edges_of_the_text_and_without_pii() -> None:
    assert mask_pii("+33 6 12 34 56 78") == "[PHONE]"
    assert mask_pii("06 12 34 56 78 ou 06 98 76 54 32") == "[PHONE] ou [PHONE]"
    assert mask_pii("Nothing to hide: version 1.2.3, 12/03/2024, 42 €.") == (
        "Nothing to hide: version 1.2.3, 12/03/2024, 42 €."
    )
    assert mask_pii("ana@example.org", []) == "ana@example.org"


def test_masking_refuses_overlapping_matches() -> None:
    text = "call 0612345678"
    overlapping = [PiiMatch(PiiKind.PHONE, 5, 15, "FR"), PiiMatch(PiiKind.NATIONAL_ID, 7, 15, "x")]
    with pytest.raises(ValueError, match="overlap"):
        mask_pii(text, overlapping)


def test_overlapping_candidates_the_longest_wins() -> None:
    """Alone, 415 555 2671 passes the NHS checksum; inside +1 415 555 2671 it is part of a phone number."""
    text = "Text me at +1 415 555 2671."
    [match] = find_pii(text)
    assert (match.kind, text[match.start : match.end]) == (PiiKind.PHONE, "+1 415 555 2671")
    assert mask_pii(text) == "Text me at [PHONE]."


def test_overlapping_candidates_on_the_same_span_the_checksum_wins() -> None:
    """943 476 5919 is both a valid NHS number and a well-formed US phone number: the checksum is the
    stronger evidence, and it is masked either way."""
    text = "NHS number 943 476 5919."
    [match] = find_pii(text)
    assert (match.kind, match.detail) == (PiiKind.NATIONAL_ID, "GB NHS")
    assert mask_pii(text) == "NHS number [ID]."


def test_an_iban_followed_by_an_upper_case_word() -> None:
    """The candidate regex swallows "BANK" as a fifth group; the checksum decides where the IBAN ends."""
    text = "Pay ES91 2100 0418 4502 0005 1332 BANK SANTANDER."
    [match] = find_pii(text)
    assert text[match.start : match.end] == "ES91 2100 0418 4502 0005 1332"


def test_email_like_text_without_a_domain_is_not_an_email() -> None:
    for text in ["ping @jsmith", "user@localhost", "marie.dupont@atelier", "a@b.c", "x@.com", "@example.org"]:
        assert find_pii(text) == [], text
    [match] = find_pii("Write to first.last+tag@sub.example.co.uk.")
    assert match.kind is PiiKind.EMAIL
    assert (match.start, match.end) == (9, 41)


def test_a_card_followed_by_its_security_code() -> None:
    """The candidate regex takes "123" as a fifth group; the card ends where Luhn and the network agree."""
    text = "Visa 4111 1111 1111 1111 123, expires 09/27."
    [match] = find_pii(text)
    assert (match.kind, text[match.start : match.end]) == (PiiKind.CARD, "4111 1111 1111 1111")


def test_a_match_never_carries_its_value() -> None:
    """Matches go into audit records as they are: the detail names the kind of value, never the value."""
    for case in load_cases():
        for match in find_pii(case.text):
            value = case.text[match.start : match.end]
            assert value not in match.detail, (match, case.text)


def test_the_documented_example_holds() -> None:
    result = doctest.testmod(pii_module)
    assert (result.attempted, result.failed) == (3, 0)
