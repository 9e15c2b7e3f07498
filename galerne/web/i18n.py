"""The web app's languages: gettext catalogues compiled by Babel, and the choice of one per request.

The language is, in order: the user's own setting, the `lang` cookie (the switcher in the layout sets
it), the browser's `Accept-Language`, else English. Catalogues live in
`galerne/web/locales/<lang>/LC_MESSAGES/messages.po`; the compiled `.mo` files are committed beside them
(`scripts/i18n.sh` extracts, updates and compiles; a test fails when a `.mo` is stale or a string is
untranslated).

Example::

    lang = choose_language(user_locale=None, cookie=None, accept_language="fr-CH, fr;q=0.9, en;q=0.8")  # "fr"
    translations(lang).gettext("Log in")  # "Se connecter"
"""

from __future__ import annotations

import gettext
from functools import cache
from importlib.resources import files
from pathlib import Path

from babel.support import Translations

DEFAULT_LANGUAGE = "en"
# Each language under its own name, as the switcher shows it.
LANGUAGES: dict[str, str] = {"en": "English", "fr": "Français", "de": "Deutsch", "es": "Español", "it": "Italiano"}
LANGUAGE_COOKIE = "lang"
DOMAIN = "messages"


def locales_dir() -> Path:
    return Path(str(files("galerne.web").joinpath("locales")))


@cache
def translations(lang: str) -> gettext.NullTranslations:
    """The compiled catalogue of `lang` (English is the source language: its strings are the msgids)."""
    if lang == DEFAULT_LANGUAGE or lang not in LANGUAGES:
        return gettext.NullTranslations()
    return Translations.load(str(locales_dir()), [lang], DOMAIN)


def N_(message: str) -> str:
    """Mark a string for extraction whose translation happens later, in a template (`{{ _(error) }}`)."""
    return message


def choose_language(*, user_locale: str | None, cookie: str | None, accept_language: str | None) -> str:
    for choice in (user_locale, cookie):
        if choice in LANGUAGES:
            return choice
    return negotiate(accept_language) or DEFAULT_LANGUAGE


def negotiate(accept_language: str | None) -> str | None:
    """The first of our languages in an `Accept-Language` header, by its q-values (`fr-CH` counts as `fr`)."""
    if not accept_language:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        language = tag.strip().split("-")[0].lower()
        if language in LANGUAGES and quality > 0:
            ranked.append((-quality, position, language))
    return min(ranked)[2] if ranked else None
