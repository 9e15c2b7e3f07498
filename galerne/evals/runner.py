"""Run one task on one model: pick the items, ask concurrently, store each result as it comes, resume.

A run is identified by its configuration (model, task, the data's content, limit, shots, seed, scoring,
languages, generation length, prompt version): running the same configuration again finds the stored run and
asks only about the items it has no result for, so an interrupted evaluation resumes where it stopped and a
finished one costs nothing to rerun. Concurrency does not enter the configuration: greedy replies do not
depend on what else the engine batches (`docs/engine.md`).

Items that fail on the model's side for a reason that would not change (a prompt longer than the context)
are stored as wrong with their error; transient failures (the engine stopped, an upstream is down) are not
stored, so the next rerun asks again — the summary says how many.

Example::

    runner = EvalRunner(database, client, entry)
    summary = await runner.run(EvalConfig(task="arc", data=Path("ARC-Challenge-Test.jsonl"), limit=100))
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from galerne.catalog import ModelEntry
from galerne.errors import GalerneError, InvalidRequestError, UnsupportedFeatureError
from galerne.evals.client import ServiceClient
from galerne.evals.formats import Dataset, read_dataset
from galerne.evals.items import Item
from galerne.evals.prompts import pick_examples
from galerne.evals.sandbox import Sandbox
from galerne.evals.tasks import TASKS, ItemOptions, Scoring, evaluate_item
from galerne.storage.database import Database
from galerne.storage.eval_results import ItemOutcome, RunSpec, add_outcome, done_item_ids, finish_run, open_run

PROMPT_VERSION = 1


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate; `shots` None means the task's customary number, `scoring` "auto" means
    log-likelihood where the model can score continuations, a constrained letter otherwise."""

    task: str
    data: Path
    limit: int | None = None
    shots: int | None = None
    seed: int = 1234
    scoring: str = "auto"
    languages: tuple[str, ...] = ()
    max_tokens: int = 384


@dataclass
class RunSummary:
    run_id: str
    num_items: int
    num_skipped: int = 0
    num_done: int = 0
    num_correct: int = 0
    failures: list[str] = field(default_factory=list)


ProgressCallback = Callable[[int], None]


class EvalRunner:
    def __init__(
        self, database: Database, client: ServiceClient, entry: ModelEntry, *, sandbox: Sandbox | None = None
    ) -> None:
        self._database = database
        self._client = client
        self._entry = entry
        self._sandbox = sandbox or Sandbox()

    def plan(self, config: EvalConfig) -> tuple[Dataset, list[Item], Scoring, dict[str, Any]]:
        """Read and select the items and settle the configuration (raises EvalDataError on bad data)."""
        spec = TASKS.get(config.task)
        if spec is None:
            raise InvalidRequestError(f"unknown task {config.task!r}; known tasks: {', '.join(TASKS)}")
        dataset = read_dataset(config.task, config.data, languages=config.languages)
        items = list(dataset.items)
        if config.limit is not None:
            items = _first_per_language(items, config.limit)
        scoring = self._scoring(spec.kind, config.scoring)
        shots = spec.default_shots if config.shots is None else config.shots
        keyed = {
            "task": config.task, "model": self._entry.id, "data_sha256": _digest(dataset), "limit": config.limit,
            "shots": shots, "seed": config.seed, "scoring": scoring, "languages": sorted(config.languages),
            "max_tokens": config.max_tokens if spec.kind != "choice" else None, "prompt_version": PROMPT_VERSION,
        }
        return dataset, items, scoring, keyed

    async def run(self, config: EvalConfig, *, concurrency: int = 4, on_start: ProgressCallback | None = None,
                  on_item: ProgressCallback | None = None) -> RunSummary:
        """Evaluate the items without a stored result; `on_start` gets how many that is, `on_item` 1 per item."""
        dataset, items, scoring, keyed = self.plan(config)
        spec = RunSpec(
            config_key=hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest(), model=self._entry.id,
            task=config.task, config={**keyed, "data_path": str(config.data.resolve())},
            catalog_entry=self._entry.model_dump(mode="json"), num_items=len(items),
        )
        run_id, done = await asyncio.to_thread(self._open, spec)
        todo = [item for item in items if item.id not in done]
        summary = RunSummary(run_id=run_id, num_items=len(items), num_skipped=len(items) - len(todo))
        if on_start is not None:
            on_start(len(todo))
        options = ItemOptions(scoring=scoring, seed=config.seed, max_tokens=config.max_tokens, sandbox=self._sandbox)
        shots = int(keyed["shots"])
        slots = asyncio.Semaphore(max(1, concurrency))

        async def one(item: Item) -> None:
            async with slots:
                examples = pick_examples(item, dataset.examples, shots, config.seed)
                try:
                    outcome = await evaluate_item(item, examples, self._client, options)
                except InvalidRequestError as exc:  # the same request would fail again: a wrong answer
                    outcome = ItemOutcome(item.id, item.language, "", False, None, 0.0, {"error": exc.message})
                except GalerneError as exc:
                    summary.failures.append(f"{item.id}: {exc.message}")
                    return
                await asyncio.to_thread(self._store, run_id, outcome)
                summary.num_done += 1
                summary.num_correct += outcome.is_correct
                if on_item is not None:
                    on_item(1)

        await asyncio.gather(*(one(item) for item in todo))
        if not summary.failures:
            await asyncio.to_thread(self._finish, run_id)
        return summary

    def _scoring(self, kind: str, requested: str) -> Scoring:
        """"auto": log-likelihood where the model has logprobs, else a constrained letter where it takes a
        JSON schema, else the first letter of a free reply."""
        if kind != "choice":
            return "generation"
        client = self._client
        if requested == "auto":
            return "loglikelihood" if client.can_score else "choice" if client.can_constrain else "letter"
        if requested == "loglikelihood" and not client.can_score:
            raise UnsupportedFeatureError(
                f"model {self._entry.id!r} ({self._entry.engine} engine) cannot score log-likelihoods; "
                "use --scoring choice (a constrained letter) or --scoring auto"
            )
        if requested == "choice" and not client.can_constrain:
            raise UnsupportedFeatureError(
                f"model {self._entry.id!r} does not offer JSON output to constrain the answer; use --scoring letter "
                "(the first letter of a free reply) or --scoring auto"
            )
        if requested not in ("loglikelihood", "choice", "letter"):
            raise InvalidRequestError(f"unknown scoring {requested!r}; use auto, loglikelihood, choice or letter")
        return "loglikelihood" if requested == "loglikelihood" else "choice" if requested == "choice" else "letter"

    def _open(self, spec: RunSpec) -> tuple[str, set[str]]:
        with self._database.session() as session:
            run = open_run(session, spec)
            session.flush()
            return run.id, done_item_ids(session, run.id)

    def _store(self, run_id: str, outcome: ItemOutcome) -> None:
        with self._database.session() as session:
            add_outcome(session, run_id, outcome)

    def _finish(self, run_id: str) -> None:
        with self._database.session() as session:
            finish_run(session, run_id)


def _first_per_language(items: Sequence[Item], limit: int) -> list[Item]:
    """The first `limit` items of each language (so `--limit 10` on five languages asks about 50)."""
    taken: dict[str, int] = {}
    chosen = []
    for item in items:
        if taken.get(item.language, 0) < limit:
            taken[item.language] = taken.get(item.language, 0) + 1
            chosen.append(item)
    return chosen


def _digest(dataset: Dataset) -> str:
    """The data's content, not its path: moved files resume the same run, edited ones start a new one."""
    return hashlib.sha256(repr((dataset.items, dataset.examples)).encode()).hexdigest()
