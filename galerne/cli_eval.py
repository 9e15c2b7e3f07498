"""`galerne eval run|report`: benchmark a catalogue model on local data, then compare runs.

Example::

    galerne eval run --model smollm2 --task arc --data ~/data/ARC-Challenge-Test.jsonl --limit 200
    galerne eval report --model smollm2 --model gemma3-270m --format markdown --plot compare.png
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from galerne.catalog import Catalog, load_catalog
from galerne.config import Settings
from galerne.errors import GalerneError
from galerne.evals.formats import read_dataset
from galerne.evals.report import Format, plot, render, report_rows
from galerne.evals.sandbox import Sandbox, SandboxLimits
from galerne.evals.tasks import TASKS
from galerne.storage.database import Database

if TYPE_CHECKING:
    from galerne.evals.runner import EvalConfig, RunSummary

eval_app = typer.Typer(help="Evaluate catalogue models on standard benchmarks (local data files).",
                       no_args_is_help=True)
_T = TypeVar("_T")
_stderr = Console(stderr=True)


def _run(action: Callable[[], _T]) -> _T:
    """Errors become one `error:` line and exit status 2 for bad input, 1 otherwise, never a traceback."""
    try:
        return action()
    except GalerneError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=2 if 400 <= exc.status < 500 else 1) from exc


@eval_app.command("run")
def run(
    model: Annotated[str, typer.Option(help="Catalogue model id or alias.")],
    task: Annotated[str, typer.Option(help=f"One of: {', '.join(TASKS)}.")],
    data: Annotated[Path, typer.Option(help="The task's data file or directory (see docs/evals.md).")],
    limit: Annotated[int | None, typer.Option(min=1, help="First N items (per language).")] = None,
    shots: Annotated[int | None, typer.Option(min=0, help="Few-shot examples (default: the task's usual).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seeds few-shot choice and sampling.")] = 1234,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight.")] = 4,
    project: Annotated[str, typer.Option(help="Project the usage is metered under (created if missing).")] = "evals",
    scoring: Annotated[str, typer.Option(help="Multiple choice: auto, loglikelihood, choice or letter.")] = "auto",
    languages: Annotated[str | None, typer.Option(help="Multilingual tasks: e.g. fr,de (default: all).")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Generation tasks: longest reply.")] = 384,
    timeout: Annotated[float, typer.Option(min=0.5, help="Code tasks: seconds per program.")] = 10.0,
    allow_weak_sandbox: Annotated[
        bool, typer.Option(help="Run code tasks even where the sandbox cannot isolate the network.")
    ] = False,
    config: Annotated[Path | None, typer.Option("--config", help="Catalogue TOML.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run TASK on MODEL; rerunning the same configuration resumes (items already scored are skipped)."""
    if task not in TASKS:
        typer.echo(f"error: unknown task {task!r}; known tasks: {', '.join(TASKS)}", err=True)
        raise typer.Exit(code=2)
    language_list = tuple(part.strip() for part in (languages or "").split(",") if part.strip())
    _run(lambda: read_dataset(task, data, languages=language_list))  # bad data fails before a model loads
    settings = Settings.model_validate({"config": config} if config else {})
    # Without a catalogue file every installed built-in model may be evaluated (GALERNE_MODELS picks what
    # `serve` loads; here --model names the one to load).
    catalog = _run(lambda: load_catalog(settings.config))
    sandbox = None
    if TASKS[task].kind == "code":
        sandbox = Sandbox(SandboxLimits(seconds=timeout))
        checked = sandbox
        report = _run(lambda: asyncio.run(checked.probe()))
        _stderr.print(report.describe())
        if not report.isolates_network and not allow_weak_sandbox:
            typer.echo("error: this machine lets the sandbox isolate nothing from the network (no network "
                       "namespace, no Landlock ABI 4); pass --allow-weak-sandbox to run model code anyway", err=True)
            raise typer.Exit(code=2)
    from galerne.evals.runner import EvalConfig  # the runner loads the chat service: only `eval run` needs it

    eval_config = EvalConfig(task=task, data=data, limit=limit, shots=shots, seed=seed, scoring=scoring,
                             languages=language_list, max_tokens=max_tokens)
    summary = _run(lambda: asyncio.run(_evaluate(settings, catalog, model, project, eval_config, concurrency,
                                                 sandbox)))
    if as_json:
        typer.echo(json.dumps(summary.__dict__, indent=2))
        return
    typer.echo(f"run {summary.run_id}: {summary.num_done} items scored now, {summary.num_skipped} already stored")
    if summary.failures:
        typer.echo(f"{len(summary.failures)} items failed and were not stored (rerun to retry them); first: "
                   f"{summary.failures[0]}", err=True)
    database = _run(lambda: Database.open(settings.resolved_database_url()))
    try:
        typer.echo(render(report_rows(database, run_ids=[summary.run_id]), "markdown"), nl=False)
    finally:
        database.close()


async def _evaluate(settings: Settings, catalog: Catalog, model: str, project: str, config: EvalConfig,
                    concurrency: int, sandbox: Sandbox | None) -> RunSummary:
    from galerne.evals.runner import EvalRunner
    from galerne.evals.runtime import eval_runtime

    async with eval_runtime(settings, catalog, model, project=project) as runtime:
        runner = EvalRunner(runtime.database, runtime.client, runtime.entry, sandbox=sandbox)
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=_stderr,
        ) as progress:
            bar = progress.add_task(f"{config.task} on {runtime.entry.id}", total=None)
            return await runner.run(
                config, concurrency=concurrency,
                on_start=lambda total: progress.update(bar, total=total),
                on_item=lambda count: progress.advance(bar, count),
            )


@eval_app.command("report")
def report(
    run_ids: Annotated[list[str] | None, typer.Option("--run", help="Run id (repeatable).")] = None,
    models: Annotated[list[str] | None, typer.Option("--model", help="Model id (repeatable).")] = None,
    tasks: Annotated[list[str] | None, typer.Option("--task", help="Task (repeatable).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="markdown, csv or html.")] = "markdown",
    output: Annotated[Path | None, typer.Option(help="Write the table here instead of printing it.")] = None,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Also draw a plot (.png or .svg).")] = None,
) -> None:
    """Compare stored runs (all of them unless --run/--model/--task narrow it) with 95 % confidence intervals."""
    if fmt not in ("markdown", "csv", "html"):
        typer.echo(f"error: unknown format {fmt!r}; use markdown, csv or html", err=True)
        raise typer.Exit(code=2)
    settings = Settings()
    database = _run(lambda: Database.open(settings.resolved_database_url()))
    try:
        rows = _run(lambda: report_rows(database, run_ids=run_ids or (), models=models or (), tasks=tasks or ()))
    finally:
        database.close()
    if not rows:
        typer.echo("error: no evaluation runs match; run one with `galerne eval run`", err=True)
        raise typer.Exit(code=1)
    fmt_checked: Format = "csv" if fmt == "csv" else "html" if fmt == "html" else "markdown"
    table = render(rows, fmt_checked)
    if output is None:
        typer.echo(table, nl=False)
    else:
        output.write_text(table, encoding="utf-8")
    if plot_path is not None:
        _run(lambda: plot(rows, plot_path))
        typer.echo(f"plot written to {plot_path}", err=True)
