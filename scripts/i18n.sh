#!/usr/bin/env bash
# Le Chat's catalogues: extract the strings of galerne/web (templates and Python), merge them into each
# language's messages.po, then compile the .mo files that ship in the package (they are committed).
#   ./scripts/i18n.sh            after changing strings: extract, update, compile
#   ./scripts/i18n.sh compile    after translating: compile only
# tests/web/test_i18n.py fails when a string is untranslated or a .mo is older than its .po.
set -euo pipefail
cd "$(dirname "$0")/.."
PYBABEL=.venv/bin/pybabel
LOCALES=galerne/web/locales
if [[ "${1:-}" != "compile" ]]; then
  "$PYBABEL" extract -F babel.cfg -k N_ --project Galerne --copyright-holder "Galerne contributors" --no-location --sort-output -o "$LOCALES/messages.pot" .
  for lang in fr de es it; do
    if [[ -f "$LOCALES/$lang/LC_MESSAGES/messages.po" ]]; then
      "$PYBABEL" update -i "$LOCALES/messages.pot" -d "$LOCALES" -l "$lang" --no-fuzzy-matching
    else
      "$PYBABEL" init -i "$LOCALES/messages.pot" -d "$LOCALES" -l "$lang"
    fi
  done
fi
"$PYBABEL" compile -d "$LOCALES" --statistics
