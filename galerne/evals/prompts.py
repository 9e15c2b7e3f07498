"""Prompts for each kind of item, with `k` few-shot examples chosen reproducibly.

Log-likelihood prompts are plain text, as lm-eval-harness builds them: the examples, each followed by its
gold answer, then the item's query; every choice is scored as a continuation of it. Generation prompts are
chat messages (they go through the chat service, so they work on every engine): each example is a
user/assistant turn. Code prompts end with an assistant message sent as a prefix (la Plateforme's
`prefix: true`), so the model continues the function instead of talking about it.

Example::

    shots = pick_examples(item, data.examples, k=5, seed=1234)
    context = multiple_choice_context(item, shots)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from galerne.evals.items import LETTERS, CodeItem, Item, MathItem, MultipleChoiceItem
from galerne.evals.words import words_for

_I = TypeVar("_I", bound=Item)

CODE_STOPS = ("\n```", "```", "\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ")
MBPP_STOPS = ("\n```", "```")


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """Messages for the chat service; `prefix` (when not empty) is the assistant's reply so far."""

    messages: tuple[dict[str, Any], ...]
    prefix: str = ""
    stop: tuple[str, ...] = ()

    def wire_messages(self) -> list[dict[str, Any]]:
        messages = list(self.messages)
        if self.prefix:
            messages.append({"role": "assistant", "content": self.prefix, "prefix": True})
        return messages


def pick_examples(item: _I, pool: Sequence[_I], k: int, seed: int) -> list[_I]:
    """`k` examples for `item`: the same for the same seed whatever the order items run in, never the item
    itself, and in the item's language (and MMLU subject) when the pool has enough of those."""
    if k <= 0:
        return []
    others = [example for example in pool if example.id != item.id and example.language == item.language]
    if isinstance(item, MultipleChoiceItem) and item.subject:
        same_subject = [e for e in others if getattr(e, "subject", "") == item.subject]
        if len(same_subject) >= k:
            others = same_subject
    rng = random.Random(f"{seed}:{item.id}")
    return rng.sample(others, min(k, len(others)))


def multiple_choice_context(item: MultipleChoiceItem, shots: Sequence[MultipleChoiceItem]) -> str:
    """The text every choice of `item` continues, for log-likelihood scoring."""
    header = ""
    if item.shows_letters and item.subject and item.language == "en":
        subject = item.subject.replace("_", " ")
        header = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    examples = "".join(f"{shot.query}{shot.choices[shot.gold]}\n\n" for shot in shots)
    return header + examples + item.query


def lettered_question(item: MultipleChoiceItem) -> str:
    """The question with its choices listed as letters, for models that can only generate."""
    if item.shows_letters:
        return item.query
    listed = "\n".join(f"{letter}. {choice.strip()}" for letter, choice in zip(LETTERS, item.choices, strict=False))
    return f"{item.question or item.query}\n{listed}\n{words_for(item.language).answer}:"


def choice_prompt(
    item: MultipleChoiceItem, shots: Sequence[MultipleChoiceItem], *, is_constrained: bool = True
) -> ChatPrompt:
    """A chat asking for the letter: constrained to `{"answer": <one of the letters>}`, or a bare letter."""
    instruction = words_for(item.language).choose
    messages: list[dict[str, Any]] = []
    for shot in shots:
        answer = f'{{"answer": "{LETTERS[shot.gold]}"}}' if is_constrained else LETTERS[shot.gold]
        messages.append({"role": "user", "content": f"{lettered_question(shot)}\n{instruction}"})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": f"{lettered_question(item)}\n{instruction}"})
    return ChatPrompt(tuple(messages))


def choice_schema(item: MultipleChoiceItem) -> dict[str, Any]:
    letters = list(LETTERS[: len(item.choices)])
    return {
        "type": "object", "properties": {"answer": {"type": "string", "enum": letters}},
        "required": ["answer"], "additionalProperties": False,
    }


def math_prompt(item: MathItem, shots: Sequence[MathItem]) -> ChatPrompt:
    """GSM8K: worked examples as turns; the answer is the last number of the reply (or the one after ####)."""
    words = words_for(item.language)
    messages: list[dict[str, Any]] = []
    for shot in shots:
        messages.append({"role": "user", "content": f"{words.question}: {shot.question}"})
        messages.append({"role": "assistant", "content": shot.solution})
    messages.append({"role": "user", "content": f"{words.question}: {item.question}"})
    return ChatPrompt(tuple(messages), stop=(f"\n\n{words.question}:", f"\n{words.question}:"))


def code_prompt(item: CodeItem, shots: Sequence[CodeItem]) -> ChatPrompt:
    """HumanEval: continue the function from its signature and docstring. MBPP: write the function the text
    asks for, shown the tests it must pass (as the MBPP paper prompts)."""
    messages: list[dict[str, Any]] = []
    for shot in shots:
        messages.append({"role": "user", "content": _code_request(shot)})
        messages.append({"role": "assistant", "content": f"```python\n{shot.prompt}{shot.reference}\n```"})
    messages.append({"role": "user", "content": _code_request(item)})
    if item.prompt:
        return ChatPrompt(tuple(messages), prefix=f"```python\n{item.prompt}", stop=CODE_STOPS)
    return ChatPrompt(tuple(messages), prefix="```python\n", stop=MBPP_STOPS)


def _code_request(item: CodeItem) -> str:
    if item.prompt:
        return f"Complete this Python function. Reply with code only.\n```python\n{item.prompt}```"
    tests = "\n".join(item.test_list)
    return f"{item.instruction}\nYour code should pass these tests:\n{tests}\nReply with code only."


def program_for(item: CodeItem, completion: str) -> str:
    """The program the sandbox runs: the solution (prompt + completion), then the item's tests."""
    return f"{item.prompt}{completion}\n\n{item.test}"
