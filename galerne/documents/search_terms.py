"""The words of a question that a lexical search should look for, as stems usable as prefix queries.

Documents and questions come in five languages, and a question may be in another language than its
document. So stop words of all five are dropped, and each remaining word is reduced by the Snowball
stemmers of all five; the shortest stem (at least `MIN_STEM` letters, 3 for short words) becomes a prefix query, which
matches the word's inflections in the index ("vacations" -> `vacat*` finds "vacation"; "congés" ->
`cong*` finds "congé"). Numbers and codes are kept whole: they are often what a question is about.

Example::

    search_prefixes("Combien de jours de congés payés ?")   # ['combi', 'jour', 'cong', 'pay']
"""

from __future__ import annotations

import re
from functools import cache

import snowballstemmer
from stop_words import get_stop_words

LANGUAGES = {"en": "english", "fr": "french", "de": "german", "es": "spanish", "it": "italian"}
MIN_STEM = 4
MAX_TERMS = 32
_WORD = re.compile(r"\w+", re.UNICODE)


@cache
def _stop_words() -> frozenset[str]:
    return frozenset(word.lower() for language in LANGUAGES for word in get_stop_words(language))


@cache
def _stemmers() -> tuple[snowballstemmer.stemmer, ...]:
    return tuple(snowballstemmer.stemmer(name) for name in LANGUAGES.values())


def search_prefixes(question: str) -> list[str]:
    """Distinct lower-case stems (letters and digits only) of the question's content words, in order."""
    prefixes: list[str] = []
    stop_words = _stop_words()
    for word in _WORD.findall(question.lower()):
        word = word.replace("_", "")
        if not word or word in stop_words or (len(word) < 3 and not word.isdigit()):
            continue
        prefix = word if any(char.isdigit() for char in word) else _shortest_stem(word)
        if prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes[:MAX_TERMS]


def _shortest_stem(word: str) -> str:
    floor = MIN_STEM if len(word) > 5 else 3  # "days" -> "day", but "employees" not below "empl"
    stems = [stemmer.stemWord(word) for stemmer in _stemmers()]
    return min((stem for stem in stems if len(stem) >= floor and stem.isalnum()), key=len, default=word)
