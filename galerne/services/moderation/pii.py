"""Deterministic PII detectors: e-mail addresses, phone numbers, IBANs, payment cards and national ids.

A candidate regex finds what looks like a number; a public checksum (python-stdnum) or libphonenumber's
numbering plan (phonenumbers) decides whether it is one. A 16-digit order number that fails Luhn, an IBAN
with a wrong mod-97 key or a DNI with the wrong letter is not reported: that is what makes these detectors
better than a small model at this job. Pure regex and arithmetic, compiled once, because policies run them
on every streamed sentence.

Example::

    >>> text = "Write to ana@example.org or call +33 6 12 34 56 78."
    >>> [(m.kind, text[m.start : m.end]) for m in find_pii(text)]
    [(<PiiKind.EMAIL: 'email'>, 'ana@example.org'), (<PiiKind.PHONE: 'phone'>, '+33 6 12 34 56 78')]
    >>> mask_pii(text)
    'Write to [EMAIL] or call [PHONE].'
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from stdnum import iban, luhn
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nif, nir
from stdnum.gb import nhs
from stdnum.it import codicefiscale
from stdnum.us import itin, ssn


class PiiKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    IBAN = "iban"
    CARD = "card"
    NATIONAL_ID = "national_id"


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """One piece of PII in a text: where it is and what it is, never its value (audit records keep this)."""

    kind: PiiKind
    start: int  # character offsets in the text
    end: int
    detail: str  # "FR NIR", "ES DNI", "IBAN", "Visa", "FR" (a phone's country)…


PLACEHOLDERS: dict[PiiKind, str] = {
    PiiKind.EMAIL: "[EMAIL]",
    PiiKind.PHONE: "[PHONE]",
    PiiKind.IBAN: "[IBAN]",
    PiiKind.CARD: "[CARD]",
    PiiKind.NATIONAL_ID: "[ID]",
}

# Phone numbers are read as written in the countries of Galerne's five languages; `+..` numbers parse from any.
PHONE_REGIONS = ("GB", "US", "FR", "DE", "ES", "IT")
# STRICT_GROUPING is VALID plus a check that the digit groups are where the country puts them: with plain
# VALID, "invoice no. 2024-000123" and the tax id "12 345 678 903" read as US numbers, and none of the ways
# people write real numbers in the labelled set was lost to the stricter check.
PHONE_LENIENCY = phonenumbers.Leniency.STRICT_GROUPING
# libphonenumber is the slow part: skip it for text with too few digits to hold any phone number.
MIN_PHONE_DIGITS = 6

# Kinds whose matches are longer than any phone number inside them: libphonenumber need not look there (it
# tries every digit group of an IBAN in every region, two thirds of its time on a sentence that holds one).
LONGER_THAN_PHONES = frozenset({PiiKind.EMAIL, PiiKind.IBAN, PiiKind.CARD})
# When two candidates overlap, the longer wins; on equal spans the stronger evidence does: a checksum beats
# a phone numbering plan (most 10- or 11-digit strings are a valid phone number somewhere).
KIND_PRIORITY = {PiiKind.IBAN: 0, PiiKind.CARD: 1, PiiKind.NATIONAL_ID: 2, PiiKind.EMAIL: 3, PiiKind.PHONE: 4}

EMAIL = re.compile(
    r"(?<![\w.+%-])[\w.+%-]+(?<!\.)@"  # local part, not ending in a dot
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}"  # domain with a letter TLD
    r"(?![\w-]|\.[^\W_])"
)
# Country code, check digits, then the BBAN as one run or in groups of up to four.
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b", re.IGNORECASE)
# 13-19 digits: one run, groups of four (the last 1-4 long), or Amex's 4-6-5; separators are a space or a dash.
CARD = re.compile(r"(?<![\d-])(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,4})?|\d{4}[ -]\d{6}[ -]\d{5})(?![\d-])")

TRAILING_GROUP = re.compile(r"[ -][A-Z0-9]+$", re.IGNORECASE)

CARD_NETWORKS: tuple[tuple[str, tuple[int, int], frozenset[int]], ...] = (
    # (network, inclusive prefix range as numbers of the same length, allowed lengths)
    ("Amex", (34, 34), frozenset({15})),
    ("Amex", (37, 37), frozenset({15})),
    ("Diners Club", (300, 305), frozenset({14, 16, 19})),
    ("Diners Club", (36, 36), frozenset({14, 16, 19})),
    ("Diners Club", (38, 39), frozenset({14, 16, 19})),
    ("JCB", (3528, 3589), frozenset({16, 17, 18, 19})),
    ("Visa", (4, 4), frozenset({13, 16, 19})),
    ("Mastercard", (51, 55), frozenset({16})),
    ("Mastercard", (2221, 2720), frozenset({16})),
    ("Discover", (6011, 6011), frozenset({16, 17, 18, 19})),
    ("Discover", (644, 649), frozenset({16, 17, 18, 19})),
    ("Discover", (65, 65), frozenset({16, 17, 18, 19})),
    ("UnionPay", (62, 62), frozenset({16, 17, 18, 19})),
    ("Maestro", (50, 50), frozenset({13, 14, 15, 16, 17, 18, 19})),
    ("Maestro", (56, 69), frozenset({13, 14, 15, 16, 17, 18, 19})),
)


@dataclass(frozen=True, slots=True)
class NationalId:
    """A national id that stdnum can check, and the regex that finds its candidates."""

    detail: str
    pattern: re.Pattern[str]
    is_valid: Callable[[str], bool]


US_TAX_NUMBER = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")


def _unspaced(candidate: str) -> str:
    return re.sub(r"[\s./-]", "", candidate)


NATIONAL_IDS = (
    # FR social security number: sex, year, month, department (2A/2B for Corsica), commune, order, key.
    NationalId(
        "FR NIR",
        re.compile(r"\b[12]( ?)\d{2}\1\d{2}\1(?:\d{2}|2[AB])\1\d{3}\1\d{3}\1\d{2}\b", re.IGNORECASE),
        lambda c: bool(nir.is_valid(_unspaced(c))),
    ),
    # FR tax number (numéro fiscal): 13 digits starting 0-3, the last three a mod-511 key.
    NationalId("FR NIF", re.compile(r"\b[0-3]\d( ?)\d{2}\1\d{3}\1\d{3}\1\d{3}\b"), lambda c: bool(nif.is_valid(c))),
    # DE tax id (Steuer-IdNr): 11 digits, no leading zero, ISO 7064 mod 11,10 check digit.
    NationalId(
        "DE IdNr",
        re.compile(r"\b[1-9]\d( ?)\d{3}\1\d{3}\1\d{3}\b"),
        lambda c: bool(idnr.is_valid(_unspaced(c))),
    ),
    # ES DNI: 8 digits (sometimes written 12.345.678) and a check letter.
    NationalId(
        "ES DNI",
        re.compile(r"\b\d{2}(\.?)\d{3}\1\d{3}[- ]?[A-Z]\b", re.IGNORECASE),
        lambda c: bool(dni.is_valid(_unspaced(c))),
    ),
    NationalId("ES NIE", re.compile(r"\b[XYZ][- ]?\d{7}[- ]?[A-Z]\b", re.IGNORECASE), lambda c: bool(nie.is_valid(c))),
    # IT codice fiscale; omocodia replaces digits by the letters LMNPQRSTUV.
    NationalId(
        "IT codice fiscale",
        re.compile(r"\b[A-Z]{6}[\dLMNP-V]{2}[A-EHLMPR-T][\dLMNP-V]{2}[A-Z][\dLMNP-V]{3}[A-Z]\b", re.IGNORECASE),
        lambda c: bool(codicefiscale.is_valid(c)),
    ),
    # GB NHS number: 10 digits written 3-3-4 (one separator throughout), mod 11 check digit.
    NationalId("GB NHS", re.compile(r"\b\d{3}([ -]?)\d{3}\1\d{4}\b"), lambda c: bool(nhs.is_valid(_unspaced(c)))),
    # US social security number: no checksum, but stdnum rejects the never-issued areas, groups and serials;
    # only the dashed form, since nine bare digits are mostly something else.
    NationalId("US SSN", US_TAX_NUMBER, lambda c: bool(ssn.is_valid(c))),
    # US ITIN: the SSN's shape for people who cannot have one, starting with 9 (never an SSN).
    NationalId("US ITIN", US_TAX_NUMBER, lambda c: bool(itin.is_valid(c))),
)


def find_pii(text: str) -> list[PiiMatch]:
    """Every piece of PII in `text`, sorted by start, none overlapping (of overlapping candidates the longest
    wins)."""
    candidates = [*_emails(text), *_ibans(text), *_cards(text), *_national_ids(text)]
    candidates.extend(_phones(_blank_out(text, [m for m in candidates if m.kind in LONGER_THAN_PHONES])))
    candidates.sort(key=lambda m: (m.start - m.end, KIND_PRIORITY[m.kind], m.start))
    chosen: list[PiiMatch] = []  # sorted by start, never overlapping: only the neighbours need a look
    for candidate in candidates:
        index = bisect.bisect_left(chosen, candidate.start, key=lambda m: m.start)
        overlaps_before = index > 0 and chosen[index - 1].end > candidate.start
        overlaps_after = index < len(chosen) and chosen[index].start < candidate.end
        if not overlaps_before and not overlaps_after:
            chosen.insert(index, candidate)
    return chosen


def mask_pii(text: str, matches: Sequence[PiiMatch] | None = None) -> str:
    """`text` with each match replaced by its placeholder ("[EMAIL]", "[PHONE]", "[IBAN]", "[CARD]", "[ID]").

    `matches` defaults to `find_pii(text)`; pass them when you already have them (to audit and mask once).
    """
    if matches is None:
        matches = find_pii(text)
    ordered = sorted(matches, key=lambda m: m.start)
    parts: list[str] = []
    position = 0
    for match in ordered:
        if match.start < position or match.end > len(text):
            raise ValueError(f"PII matches overlap or fall outside the text: {match}; pass find_pii's matches")
        parts.append(text[position : match.start])
        parts.append(PLACEHOLDERS[match.kind])
        position = match.end
    parts.append(text[position:])
    return "".join(parts)


def _blank_out(text: str, matches: Sequence[PiiMatch]) -> str:
    """`text` with the matches' characters replaced by spaces, offsets unchanged."""
    for match in matches:
        text = text[: match.start] + " " * (match.end - match.start) + text[match.end :]
    return text


def _emails(text: str) -> Iterator[PiiMatch]:
    if "@" not in text:
        return
    for found in EMAIL.finditer(text):
        yield PiiMatch(PiiKind.EMAIL, found.start(), found.end(), "email")


def _ibans(text: str) -> Iterator[PiiMatch]:
    for found in IBAN.finditer(text):
        for candidate in _shortenings(found.group()):
            if iban.is_valid(candidate):
                yield PiiMatch(PiiKind.IBAN, found.start(), found.start() + len(candidate), "IBAN")
                break


def _cards(text: str) -> Iterator[PiiMatch]:
    for found in CARD.finditer(text):
        for candidate in _shortenings(found.group()):
            digits = re.sub(r"[ -]", "", candidate)
            network = _card_network(digits)
            if network and luhn.is_valid(digits):
                yield PiiMatch(PiiKind.CARD, found.start(), found.start() + len(candidate), network)
                break


def _shortenings(candidate: str) -> Iterator[str]:
    """The candidate, then without its last group, and so on: a candidate regex also takes in a group written
    after the number ("… 0130 00 BANK", a card's security code), and the checksum decides where it ends."""
    while True:
        yield candidate
        shorter = TRAILING_GROUP.sub("", candidate)
        if shorter == candidate:
            return
        candidate = shorter


def _card_network(digits: str) -> str | None:
    for network, (low, high), lengths in CARD_NETWORKS:
        if len(digits) in lengths and low <= int(digits[: len(str(low))]) <= high:
            return network
    return None


def _national_ids(text: str) -> Iterator[PiiMatch]:
    for national_id in NATIONAL_IDS:
        for found in national_id.pattern.finditer(text):
            if national_id.is_valid(found.group()):
                yield PiiMatch(PiiKind.NATIONAL_ID, found.start(), found.end(), national_id.detail)


def _phones(text: str) -> Iterator[PiiMatch]:
    if sum(character.isdigit() for character in text) < MIN_PHONE_DIGITS:
        return
    seen: set[tuple[int, int]] = set()
    for region in PHONE_REGIONS:
        for found in phonenumbers.PhoneNumberMatcher(text, region, leniency=PHONE_LENIENCY):
            # 912-40-1234 is a valid Madrid number by its digits, but nobody writes a phone number in the
            # shape of a US social security number.
            if (found.start, found.end) not in seen and not US_TAX_NUMBER.fullmatch(found.raw_string):
                seen.add((found.start, found.end))
                country = phonenumbers.region_code_for_number(found.number) or "international"
                yield PiiMatch(PiiKind.PHONE, found.start, found.end, country)
