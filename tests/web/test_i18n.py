"""The catalogues: every string of the web app is translated in every language, the shipped `.mo` files
match their `.po`, and the language is chosen as documented."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from galerne.web.i18n import LANGUAGES, choose_language, locales_dir, negotiate, translations

PACKAGE = Path(__file__).resolve().parents[2] / "galerne" / "web"
METHODS = [("templates/**.html", "jinja2"), ("**.py", "python")]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}


def _source_messages() -> set[str]:
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(PACKAGE), METHODS, options_map=OPTIONS, keywords=KEYWORDS
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def _key(message_id: str | tuple[str, ...]) -> str:
    """A message's singular: what `_source_messages` finds for a plural one."""
    return message_id if isinstance(message_id, str) else message_id[0]


def _forms(string: str | tuple[str, ...] | list[str]) -> str | tuple[str, ...]:
    return string if isinstance(string, str) else tuple(string)


def _is_translated(string: str | tuple[str, ...] | None) -> bool:
    """A plural message is translated when every one of its language's forms is."""
    return bool(string) if not isinstance(string, tuple) else all(string)


@pytest.mark.parametrize("lang", [code for code in LANGUAGES if code != "en"])
def test_every_string_is_translated_and_the_mo_file_is_current(lang: str) -> None:
    folder = locales_dir() / lang / "LC_MESSAGES"
    with (folder / "messages.po").open("rb") as po_file:
        catalogue = read_po(po_file, locale=lang)
    translated = {_key(message.id): message.string for message in catalogue if message.id and not message.fuzzy}
    wanted = _source_messages()
    assert len(wanted) > 30
    missing = sorted(msgid for msgid in wanted if not _is_translated(translated.get(msgid)))
    assert not missing, f"{lang}: untranslated (run scripts/i18n.sh, then translate): {missing}"
    for msgid in wanted:  # the same %(placeholders)s on both sides
        for placeholder in ("%(seconds)s", "%(name)s"):
            assert (placeholder in msgid) == (placeholder in str(translated[msgid])), (lang, msgid)
    with (folder / "messages.mo").open("rb") as mo_file:
        compiled = {
            _key(message.id): _forms(message.string) for message in read_mo(io.BytesIO(mo_file.read())) if message.id
        }
    stale = sorted(msgid for msgid in wanted if compiled.get(msgid) != _forms(translated[msgid]))
    assert not stale, f"{lang}: messages.mo is older than messages.po (run scripts/i18n.sh compile): {stale}"


def test_catalogues_load_from_the_package() -> None:
    assert translations("fr").gettext("Log in") == "Se connecter"
    assert translations("it").gettext("Settings") == "Impostazioni"
    assert translations("en").gettext("Log in") == "Log in"


def test_the_language_is_the_users_then_the_cookies_then_the_browsers() -> None:
    assert choose_language(user_locale="de", cookie="fr", accept_language="es") == "de"
    assert choose_language(user_locale=None, cookie="fr", accept_language="es") == "fr"
    assert choose_language(user_locale=None, cookie="xx", accept_language="es-MX,es;q=0.9") == "es"
    assert choose_language(user_locale=None, cookie=None, accept_language="ja, zh;q=0.5") == "en"
    assert choose_language(user_locale=None, cookie=None, accept_language=None) == "en"


def test_accept_language_weights() -> None:
    assert negotiate("en-US,en;q=0.9,de;q=0.95") == "en"
    assert negotiate("pt-BR, it;q=0.4, fr;q=0.6") == "fr"
    assert negotiate("de;q=0, it") == "it"
    assert negotiate("fr;q=oops, es;q=0.2") == "es"
    assert negotiate("*") is None
