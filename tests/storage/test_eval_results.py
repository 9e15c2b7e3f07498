"""Evaluation runs and results on SQLite and PostgreSQL (migration 0005)."""

from __future__ import annotations

from galerne.storage.database import Database
from galerne.storage.eval_results import (
    ItemOutcome,
    RunSpec,
    add_outcome,
    done_item_ids,
    find_runs,
    finish_run,
    open_run,
    results_of,
)


def _spec(key: str, model: str = "smollm2-135m-instruct", task: str = "arc") -> RunSpec:
    return RunSpec(config_key=key, model=model, task=task, config={"seed": 1, "shots": 0},
                   catalog_entry={"id": model, "languages": ["en"]}, num_items=2)


def _outcome(item_id: str, correct: bool) -> ItemOutcome:
    return ItemOutcome(item_id, "fr", "", correct, None, 0.5, {"prediction": 1, "logprobs": [-1.5, -0.25]})


def test_a_run_is_found_again_by_its_configuration(database: Database) -> None:
    with database.session() as session:
        first = open_run(session, _spec("a" * 64)).id
    with database.session() as session:
        assert open_run(session, _spec("a" * 64)).id == first
        assert open_run(session, _spec("b" * 64)).id != first


def test_results_are_stored_once_and_read_back_with_their_json(database: Database) -> None:
    with database.session() as session:
        run_id = open_run(session, _spec("c" * 64)).id
        session.flush()
        add_outcome(session, run_id, _outcome("q1", True))
    with database.session() as session:
        add_outcome(session, run_id, _outcome("q1", False))  # a second result for one item is ignored
        add_outcome(session, run_id, _outcome("q2", False))
        finish_run(session, run_id)
    with database.session() as session:
        assert done_item_ids(session, run_id) == {"q1", "q2"}
        results = results_of(session, run_id)
        assert [(r.item_id, r.is_correct) for r in results] == [("q1", True), ("q2", False)]
        assert results[0].details == {"prediction": 1, "logprobs": [-1.5, -0.25]}
        [run] = find_runs(session, run_ids=[run_id])
        assert run.finished_at is not None and run.catalog_entry["languages"] == ["en"]


def test_runs_are_found_by_model_and_task(database: Database) -> None:
    with database.session() as session:
        open_run(session, _spec("d" * 64, model="gemma3-270m", task="mmlu"))
        open_run(session, _spec("e" * 64, model="gemma3-270m", task="arc"))
        open_run(session, _spec("f" * 64, task="arc"))
    with database.session() as session:
        assert len(find_runs(session, models=["gemma3-270m"])) == 2
        assert len(find_runs(session, models=["gemma3-270m"], tasks=["arc"])) == 1
        assert len(find_runs(session)) == 3
