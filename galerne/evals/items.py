"""The benchmark items every reader produces, whatever the file format it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True, slots=True)
class MultipleChoiceItem:
    """A question with choices and one gold index (MMLU, ARC, HellaSwag and their translations).

    `query` is the text before the answer ("Question: …\\nAnswer:"); `choices` are the answers as the
    log-likelihood scorer appends them (each with its leading space); `shows_letters` says the query
    already lists the choices as "A. …" so the answer is a letter (MMLU), not the choice's own text.
    """

    id: str
    query: str
    choices: tuple[str, ...]
    gold: int
    language: str = "en"
    subject: str = ""
    shows_letters: bool = False
    question: str = ""  # the query without its "Answer:" cue, for prompts that list the choices themselves


@dataclass(frozen=True, slots=True)
class MathItem:
    """A word problem with a numeric answer (GSM8K): `solution` is the worked answer shown in few-shot
    examples, `answer` the number it ends with."""

    id: str
    question: str
    solution: str
    answer: str
    language: str = "en"


@dataclass(frozen=True, slots=True)
class CodeItem:
    """A programming problem checked by running tests (HumanEval, MBPP).

    `prompt` is what the model continues (HumanEval: a signature and docstring; MBPP: empty), `instruction`
    the natural-language task shown before it, `test` the program that must exit 0 after the solution.
    """

    id: str
    prompt: str
    test: str
    instruction: str = ""
    entry_point: str = ""
    reference: str = ""
    language: str = "en"
    test_list: tuple[str, ...] = field(default_factory=tuple)


Item = MultipleChoiceItem | MathItem | CodeItem
