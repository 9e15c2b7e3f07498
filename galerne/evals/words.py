"""The few words a benchmark prompt needs, in the five languages of the multilingual tasks.

They follow lm-eval-harness's okapi prompts ("Question: …\\nAnswer:" and their translations), so scores
compare with published ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PromptWords:
    question: str
    answer: str
    choose: str  # the instruction of the constrained-choice prompt (models that can only generate)


_WORDS = {
    "en": PromptWords("Question", "Answer", "Answer with the letter of the correct choice."),
    "fr": PromptWords("Question", "Réponse", "Répondez par la lettre du bon choix."),
    "de": PromptWords("Frage", "Antwort", "Antworten Sie mit dem Buchstaben der richtigen Wahl."),
    "es": PromptWords("Pregunta", "Respuesta", "Responda con la letra de la opción correcta."),
    "it": PromptWords("Domanda", "Risposta", "Rispondi con la lettera della scelta corretta."),
}


def words_for(language: str) -> PromptWords:
    """The language's words, English for a language without its own."""
    return _WORDS.get(language, _WORDS["en"])
