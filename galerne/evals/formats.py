"""The public benchmark layouts, parsed into items: one function per format.

- MMLU: a directory with `dev/` and `test/` (and `val/`) holding `<subject>_<split>.csv`, header-less rows
  `question,A,B,C,D,answer` (Hendrycks et al.'s `data.tar`); few-shot examples come from `dev/`.
- HellaSwag: JSON Lines with `ctx`, `endings`, `label` (and `activity_label`), as `hellaswag_val.jsonl`.
- ARC: JSON Lines with `id`, `question.stem`, `question.choices[].label/text`, `answerKey`, as
  `ARC-Challenge-Test.jsonl` (labels may be A-E or 1-5).
- Okapi's multilingual sets (m_mmlu, m_arc, m_hellaswag): a directory of `<lang>_<split>.json` files, each
  a JSON array; m_mmlu and m_arc records have `instruction`, `option_a`…`option_e`, `answer` (a letter);
  m_hellaswag records have HellaSwag's fields, translated.
- GSM8K: JSON Lines with `question` and `answer` ending in `#### <number>`; few-shot examples come from a
  `train.jsonl` beside the file when there is one.
- HumanEval: JSON Lines (gzipped or not) with `task_id`, `prompt`, `entry_point`, `test` (defining `check`).
- MBPP: JSON Lines with `task_id`, `text`, `code`, `test_list` (and `test_setup_code`).

Example::

    data = read_dataset("arc", Path("ARC-Challenge-Test.jsonl"))
    data.items[0].choices      # (" 1", " 2", ...)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from galerne.errors import EvalDataError
from galerne.evals.files import field, read_csv_rows, read_records, text_field
from galerne.evals.items import LETTERS, CodeItem, Item, MathItem, MultipleChoiceItem
from galerne.evals.words import words_for

LANGUAGES = ("en", "fr", "de", "es", "it")
_OKAPI_FILE = re.compile(r"^(?P<lang>[a-z]{2})_(?P<split>[a-z]+)\.json$")
_GSM8K_ANSWER = re.compile(r"####\s*(?P<number>-?[\d,.]+)\s*$")


@dataclass(frozen=True)
class Dataset:
    """The items to evaluate, and the pool few-shot examples are drawn from (the items themselves when the
    format has no separate development split; an item is never its own example)."""

    items: tuple[Item, ...]
    examples: tuple[Item, ...]


def read_dataset(task: str, path: Path, *, languages: Sequence[str] = ()) -> Dataset:
    """Read `path` in the format of `task`; `languages` picks files of a multilingual set (default: all)."""
    readers: dict[str, Callable[[Path, Sequence[str]], Dataset]] = {
        "mmlu": lambda p, _: _read_mmlu(p),
        "hellaswag": lambda p, _: _same_pool(_read_hellaswag(_files(p, ("*.jsonl", "*.json"))[0], "en")),
        "arc": lambda p, _: _same_pool(_read_arc(p)),
        "m_mmlu": lambda p, langs: _read_okapi(p, langs, _okapi_choice_items, ("test", "val", "validation")),
        "m_arc": lambda p, langs: _read_okapi(p, langs, _okapi_arc_items, ("test", "validation", "val")),
        "m_hellaswag": lambda p, langs: _read_okapi(p, langs, _read_hellaswag, ("validation", "val", "test")),
        "gsm8k": lambda p, _: _read_gsm8k(p),
        "humaneval": lambda p, _: _same_pool(_read_humaneval(p)),
        "mbpp": lambda p, _: _same_pool(_read_mbpp(p)),
    }
    if task not in readers:
        raise EvalDataError(f"unknown task {task!r}; known tasks: {', '.join(readers)}")
    if not path.exists():
        raise EvalDataError(f"data path not found: {path}")
    dataset = readers[task](path, languages)
    return Dataset(_unique(dataset.items), _unique(dataset.examples))


def _unique(items: tuple[Item, ...]) -> tuple[Item, ...]:
    """Results are stored per item id: a repeated id (an edited file) gets a suffix instead of being skipped."""
    seen: dict[str, int] = {}
    unique: list[Item] = []
    for item in items:
        count = seen.get(item.id, 0)
        seen[item.id] = count + 1
        unique.append(item if count == 0 else replace(item, id=f"{item.id}#{count + 1}"))
    return tuple(unique)


def _same_pool(items: list[Item]) -> Dataset:
    return Dataset(tuple(items), tuple(items))


def _files(path: Path, patterns: tuple[str, ...]) -> list[Path]:
    """`path` itself, or the files in it matching the first pattern that matches any."""
    if path.is_file():
        return [path]
    for pattern in patterns:
        found = sorted(path.glob(pattern))
        if found:
            return found
    raise EvalDataError(f"no data file in {path} (looked for {', '.join(patterns)})")


# MMLU ---------------------------------------------------------------------------------------------------

def _read_mmlu(path: Path) -> Dataset:
    if path.is_file():
        items = _mmlu_file(path)
        return Dataset(tuple(items), tuple(items))
    test_dir = path / "test"
    if not test_dir.is_dir():
        raise EvalDataError(f"{path} is not an MMLU data directory: it needs test/ (and dev/) with <subject>_test.csv")
    items = [item for csv_path in _files(test_dir, ("*_test.csv", "*.csv")) for item in _mmlu_file(csv_path)]
    dev_dir = path / "dev"
    examples = (
        [item for csv_path in _files(dev_dir, ("*_dev.csv", "*.csv")) for item in _mmlu_file(csv_path)]
        if dev_dir.is_dir() else items
    )
    return Dataset(tuple(items), tuple(examples))


def _mmlu_file(path: Path) -> list[Item]:
    subject = re.sub(r"_(test|dev|val)$", "", path.stem)
    items: list[Item] = []
    for number, row in enumerate(read_csv_rows(path, 6), start=1):
        question, *options, answer = row
        items.append(_lettered_item(
            f"{subject}/{path.stem}/{number}", question, options, answer.strip(), "en", subject, path, number
        ))
    return items


def _lettered_item(
    item_id: str, question: str, options: Sequence[str], answer: str, language: str, subject: str,
    path: Path, number: int,
) -> MultipleChoiceItem:
    """MMLU's prompt: the question, the choices as "A. …", then "Answer:"; the model answers with a letter."""
    options = [option for option in options if option is not None and str(option).strip() != ""]
    letters = LETTERS[: len(options)]
    if answer not in letters:
        raise EvalDataError(f"{path}: record {number}: answer {answer!r} is not one of {', '.join(letters)}")
    words = words_for(language)
    listed = "\n".join(f"{letter}. {str(option).strip()}" for letter, option in zip(letters, options, strict=True))
    query = f"{question.strip()}\n{listed}\n{words.answer}:"
    return MultipleChoiceItem(
        id=item_id, query=query, choices=tuple(f" {letter}" for letter in letters), gold=letters.index(answer),
        language=language, subject=subject, shows_letters=True, question=question.strip(),
    )


# HellaSwag ----------------------------------------------------------------------------------------------

def _read_hellaswag(path: Path, language: str) -> list[Item]:
    items: list[Item] = []
    for number, record in enumerate(read_records(path), start=1):
        context = text_field(record, "ctx", path, number)
        endings = field(record, "endings", path, number)
        if not isinstance(endings, list) or not endings or not all(isinstance(e, str) for e in endings):
            raise EvalDataError(f"{path}: record {number}: 'endings' must be a list of strings")
        label = _index(field(record, "label", path, number), len(endings), path, number)
        activity = str(record.get("activity_label") or "").strip()
        query = _clean_hellaswag(f"{activity}: {context}" if activity else context)
        items.append(MultipleChoiceItem(
            id=str(record.get("ind", record.get("id", number))), query=query,
            choices=tuple(" " + _clean_hellaswag(ending) for ending in endings), gold=label, language=language,
            subject=activity, question=query,
        ))
    return items


def _clean_hellaswag(text: str) -> str:
    """WikiHow contexts carry markup such as " [title]" and "[header]"; lm-eval-harness removes it."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _index(label: object, num_choices: int, path: Path, number: int) -> int:
    try:
        index = int(str(label))
    except ValueError as exc:
        raise EvalDataError(f"{path}: record {number}: label {label!r} is not a number") from exc
    if not 0 <= index < num_choices:
        raise EvalDataError(f"{path}: record {number}: label {index} is out of range 0..{num_choices - 1}")
    return index


# ARC ----------------------------------------------------------------------------------------------------

def _read_arc(path: Path) -> list[Item]:
    words = words_for("en")
    items: list[Item] = []
    for number, record in enumerate(read_records(_files(path, ("*.jsonl", "*.json"))[0]), start=1):
        question = field(record, "question", path, number)
        if not isinstance(question, dict) or "stem" not in question or "choices" not in question:
            raise EvalDataError(f"{path}: record {number}: 'question' must hold 'stem' and 'choices'")
        choices = question["choices"]
        if not isinstance(choices, list) or not all(isinstance(c, dict) and "label" in c and "text" in c
                                                    for c in choices):
            raise EvalDataError(f"{path}: record {number}: each choice needs 'label' and 'text'")
        labels = [str(choice["label"]) for choice in choices]
        answer = str(field(record, "answerKey", path, number))
        if answer not in labels:
            raise EvalDataError(f"{path}: record {number}: answerKey {answer!r} is not one of {', '.join(labels)}")
        items.append(MultipleChoiceItem(
            id=str(record.get("id", number)), query=f"{words.question}: {question['stem']}\n{words.answer}:",
            choices=tuple(f" {choice['text']}" for choice in choices), gold=labels.index(answer),
            question=f"{words.question}: {question['stem']}",
        ))
    return items


# Okapi multilingual sets --------------------------------------------------------------------------------

def _read_okapi(
    path: Path, languages: Sequence[str], parse: Callable[[Path, str], list[Item]], splits: tuple[str, ...]
) -> Dataset:
    """`<lang>_<split>.json` files; the first of `splits` present for a language is evaluated."""
    if path.is_file():
        match = _OKAPI_FILE.match(path.name)
        single = parse(path, match.group("lang") if match else "en")
        return Dataset(tuple(single), tuple(single))
    found: dict[str, dict[str, Path]] = {}
    for candidate in sorted(path.glob("*.json")):
        match = _OKAPI_FILE.match(candidate.name)
        if match:
            found.setdefault(match.group("lang"), {})[match.group("split")] = candidate
    wanted = list(languages) or sorted(found)
    missing = [language for language in wanted if language not in found]
    if not found or missing:
        raise EvalDataError(
            f"no <lang>_<split>.json file for {', '.join(missing) or 'any language'} in {path} "
            f"(found: {', '.join(sorted(found)) or 'none'})"
        )
    items: list[Item] = []
    for language in wanted:
        split = next((found[language][s] for s in splits if s in found[language]), None)
        if split is None:
            raise EvalDataError(f"{path}: no {language}_{{{','.join(splits)}}}.json file")
        items.extend(parse(split, language))
    return Dataset(tuple(items), tuple(items))


def _okapi_choice_items(path: Path, language: str) -> list[Item]:
    items: list[Item] = []
    for number, record in enumerate(read_records(path), start=1):
        options = [record.get(f"option_{letter}") for letter in "abcde"]
        answer = str(field(record, "answer", path, number)).strip()
        item_id = f"{language}/{record.get('id', number)}"
        items.append(_lettered_item(
            item_id, text_field(record, "instruction", path, number), [o for o in options if o], answer,
            language, "", path, number,
        ))
    return items


def _okapi_arc_items(path: Path, language: str) -> list[Item]:
    """m_arc as ARC: "Question: …\nAnswer:" continued by each choice's own text (lm-eval-harness's okapi task)."""
    words = words_for(language)
    items: list[Item] = []
    for number, record in enumerate(read_records(path), start=1):
        options = [str(option) for option in (record.get(f"option_{letter}") for letter in "abcde") if option]
        answer = str(field(record, "answer", path, number)).strip()
        letters = LETTERS[: len(options)]
        if not options or answer not in letters:
            raise EvalDataError(f"{path}: record {number}: answer {answer!r} is not one of {', '.join(letters)}")
        question = f"{words.question}: {text_field(record, 'instruction', path, number).strip()}"
        items.append(MultipleChoiceItem(
            id=f"{language}/{record.get('id', number)}", query=f"{question}\n{words.answer}:",
            choices=tuple(f" {option.strip()}" for option in options), gold=letters.index(answer),
            language=language, question=question,
        ))
    return items


# GSM8K --------------------------------------------------------------------------------------------------

def _read_gsm8k(path: Path) -> Dataset:
    test_file = _files(path, ("test.jsonl", "*.jsonl"))[0]
    items = _gsm8k_file(test_file)
    train_file = test_file.with_name("train.jsonl")
    examples = _gsm8k_file(train_file) if train_file.is_file() and train_file != test_file else items
    return Dataset(tuple(items), tuple(examples))


def _gsm8k_file(path: Path) -> list[Item]:
    items: list[Item] = []
    for number, record in enumerate(read_records(path), start=1):
        solution = text_field(record, "answer", path, number)
        match = _GSM8K_ANSWER.search(solution)
        if match is None:
            raise EvalDataError(f"{path}: record {number}: 'answer' must end with '#### <number>'")
        items.append(MathItem(
            id=str(record.get("id", f"{path.stem}/{number}")), question=text_field(record, "question", path, number),
            solution=solution.strip(), answer=normalise_number(match.group("number")),
            language=str(record.get("language", "en")),
        ))
    return items


def normalise_number(text: str) -> str:
    """"1,234.50" → "1234.5": how GSM8K answers compare (commas, trailing zeros and dots do not count)."""
    cleaned = text.replace(",", "").strip().rstrip(".")
    if "." in cleaned:
        cleaned = cleaned.rstrip("0").rstrip(".")
    return cleaned or "0"


# HumanEval and MBPP -------------------------------------------------------------------------------------

def _read_humaneval(path: Path) -> list[Item]:
    items: list[Item] = []
    for number, record in enumerate(read_records(_files(path, ("*.jsonl", "*.jsonl.gz"))[0]), start=1):
        entry_point = text_field(record, "entry_point", path, number)
        test = text_field(record, "test", path, number)
        items.append(CodeItem(
            id=text_field(record, "task_id", path, number), prompt=text_field(record, "prompt", path, number),
            test=f"{test}\n\ncheck({entry_point})\n", entry_point=entry_point,
            reference=str(record.get("canonical_solution", "")),
        ))
    return items


def _read_mbpp(path: Path) -> list[Item]:
    items: list[Item] = []
    for number, record in enumerate(read_records(_files(path, ("*.jsonl", "*.json"))[0]), start=1):
        tests = field(record, "test_list", path, number)
        if not isinstance(tests, list) or not all(isinstance(test, str) for test in tests):
            raise EvalDataError(f"{path}: record {number}: 'test_list' must be a list of strings")
        setup = str(record.get("test_setup_code") or "")
        items.append(CodeItem(
            id=str(field(record, "task_id", path, number)), prompt="",
            instruction=text_field(record, "text", path, number),
            test="\n".join([setup, *tests]) + "\n", reference=text_field(record, "code", path, number),
            test_list=tuple(tests),
        ))
    return items

