"""The tasks `galerne eval run --task` knows, and how one item of each is scored.

- mmlu, m_mmlu: log-likelihood of each letter after the lettered question (models with logprobs), else a
  letter constrained by a JSON schema enum (models with `response_format`), else the first letter of a free
  reply ("letter", for remote models whose upstream Galerne cannot constrain);
- arc, m_arc, hellaswag, m_hellaswag: log-likelihood of each choice's own text, acc and acc_norm (models
  with logprobs), else the constrained letter;
- gsm8k: greedy generation; the number after #### (or the last number) must equal the answer;
- humaneval, mbpp: greedy generation; the tests must pass in the sandbox (pass@1).

`acc_norm` divides each choice's log-likelihood by its length in characters before taking the best, as
lm-eval-harness does, so long choices are not penalised for being long.

Example::

    outcome = await evaluate_item(item, shots, client, ItemOptions(scoring="loglikelihood", seed=1234))
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from galerne.evals.answers import completion_code, extract_number
from galerne.evals.items import LETTERS, CodeItem, Item, MathItem, MultipleChoiceItem
from galerne.evals.prompts import (
    choice_prompt,
    choice_schema,
    code_prompt,
    math_prompt,
    multiple_choice_context,
    program_for,
)
from galerne.evals.sandbox import Sandbox
from galerne.storage.eval_results import ItemOutcome

if TYPE_CHECKING:  # the client brings the chat service: `galerne eval --help` should not load it
    from galerne.evals.client import ServiceClient

Kind = Literal["choice", "math", "code"]
Scoring = Literal["loglikelihood", "choice", "letter", "generation"]
_LETTER = re.compile(r"\b([A-J])\b")


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    kind: Kind
    default_shots: int
    is_multilingual: bool = False


TASKS = {
    spec.name: spec
    for spec in (
        TaskSpec("mmlu", "choice", 5),
        TaskSpec("m_mmlu", "choice", 5, is_multilingual=True),
        TaskSpec("arc", "choice", 25),
        TaskSpec("m_arc", "choice", 25, is_multilingual=True),
        TaskSpec("hellaswag", "choice", 10),
        TaskSpec("m_hellaswag", "choice", 10, is_multilingual=True),
        TaskSpec("gsm8k", "math", 5),
        TaskSpec("humaneval", "code", 0),
        TaskSpec("mbpp", "code", 3),
    )
}


@dataclass(frozen=True, slots=True)
class ItemOptions:
    scoring: Scoring
    seed: int
    max_tokens: int = 384
    sandbox: Sandbox | None = None


async def evaluate_item(item: Item, shots: Sequence[Item], client: ServiceClient, options: ItemOptions) -> ItemOutcome:
    """Ask the model about one item and judge its answer."""
    started = time.monotonic()
    details: dict[str, Any]
    correct: bool
    correct_norm: bool | None
    if isinstance(item, MultipleChoiceItem):
        examples = [shot for shot in shots if isinstance(shot, MultipleChoiceItem)]
        if options.scoring == "loglikelihood":
            details, correct, correct_norm = await _by_loglikelihood(item, examples, client)
        else:
            details, correct, correct_norm = await _by_constrained_choice(item, examples, client, options)
    elif isinstance(item, MathItem):
        details, correct, correct_norm = await _math(item, [s for s in shots if isinstance(s, MathItem)], client,
                                                     options)
    else:
        details, correct, correct_norm = await _code(item, [s for s in shots if isinstance(s, CodeItem)], client,
                                                     options)
    subject = item.subject if isinstance(item, MultipleChoiceItem) else ""
    return ItemOutcome(
        item_id=item.id, language=item.language, subject=subject[:128], is_correct=correct,
        is_correct_norm=correct_norm, seconds=time.monotonic() - started, details=details,
    )


async def _by_loglikelihood(
    item: MultipleChoiceItem, shots: Sequence[MultipleChoiceItem], client: ServiceClient
) -> tuple[dict[str, Any], bool, bool]:
    scores = await client.score(multiple_choice_context(item, shots), item.choices)
    logprobs = [score.logprob for score in scores]
    normalised = [logprob / max(1, len(choice)) for logprob, choice in zip(logprobs, item.choices, strict=True)]
    prediction = max(range(len(logprobs)), key=logprobs.__getitem__)
    prediction_norm = max(range(len(normalised)), key=normalised.__getitem__)
    details = {
        "method": "loglikelihood", "gold": item.gold, "prediction": prediction, "prediction_norm": prediction_norm,
        "logprobs": logprobs, "num_tokens": [score.num_tokens for score in scores],
    }
    return details, prediction == item.gold, prediction_norm == item.gold


async def _by_constrained_choice(
    item: MultipleChoiceItem, shots: Sequence[MultipleChoiceItem], client: ServiceClient, options: ItemOptions
) -> tuple[dict[str, Any], bool, None]:
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": choice_schema(item),
                                                              "strict": True}}
    is_constrained = options.scoring == "choice"
    reply = await client.generate(choice_prompt(item, shots, is_constrained=is_constrained), max_tokens=16,
                                  seed=options.seed, response_format=response_format if is_constrained else None)
    letter: str | None
    if is_constrained:
        try:
            letter = json.loads(reply).get("answer")
        except (ValueError, AttributeError):
            letter = None  # cannot happen under the grammar; kept for inspection if it ever does
    else:  # a model that cannot be constrained: the first choice letter of its free reply
        found = _LETTER.search(reply)
        letter = found.group(1) if found else None
    details = {"method": options.scoring, "gold": LETTERS[item.gold], "prediction": letter, "reply": reply[:200]}
    return details, letter == LETTERS[item.gold], None


async def _math(
    item: MathItem, shots: Sequence[MathItem], client: ServiceClient, options: ItemOptions
) -> tuple[dict[str, Any], bool, None]:
    reply = await client.generate(math_prompt(item, shots), max_tokens=options.max_tokens, seed=options.seed)
    number = extract_number(reply)
    details = {"method": "generation", "gold": item.answer, "prediction": number, "reply": reply[-1000:]}
    return details, number == item.answer, None


async def _code(
    item: CodeItem, shots: Sequence[CodeItem], client: ServiceClient, options: ItemOptions
) -> tuple[dict[str, Any], bool, None]:
    if options.sandbox is None:
        raise RuntimeError("code tasks need a sandbox")  # the runner always gives one
    prompt = code_prompt(item, shots)
    reply = await client.generate(prompt, max_tokens=options.max_tokens, seed=options.seed)
    completion = completion_code(reply, prompt.prefix, prompt.stop)
    result = await options.sandbox.run(program_for(item, completion))
    details = {
        "method": "generation+sandbox", "status": result.status, "completion": completion[-2000:],
        "output": result.detail[-1000:], "seconds_in_sandbox": round(result.seconds, 3),
    }
    return details, result.passed, None
