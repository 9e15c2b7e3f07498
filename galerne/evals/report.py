"""Comparison tables and plots of stored evaluation runs.

Markdown and HTML start with the comparison: one line per task and language, one column per model (its
latest run), "accuracy (95 % interval)" cells. Then, and in CSV, one row per run and language slice:
accuracy (pass@1 for code) with its 95 % Wilson interval, and acc_norm where the run scored by
log-likelihood; multilingual runs get an "all" row and one row per language. The plot (matplotlib, PNG or
SVG) has grouped bars per benchmark (the latest run of each model) and, for each multilingual task, bars per
language; error bars are the Wilson intervals.

Example::

    rows = report_rows(database, models=["smollm2", "gemma3-270m"])
    print(render(rows, "markdown"))
    plot(rows, Path("docs/images/eval-bundled-models.png"))
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from galerne.errors import InvalidRequestError
from galerne.evals.stats import wilson_interval
from galerne.storage.database import Database
from galerne.storage.eval_results import find_runs, results_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Format = Literal["markdown", "csv", "html"]
ALL = "all"


@dataclass(frozen=True, slots=True)
class ReportRow:
    run_id: str
    model: str
    task: str
    language: str
    scoring: str
    shots: int
    num_items: int
    num_correct: int
    num_correct_norm: int | None
    created: str
    is_overall: bool = True  # the whole run (False: one language of a multilingual run)

    @property
    def accuracy(self) -> float:
        return self.num_correct / self.num_items if self.num_items else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.num_correct, self.num_items)

    @property
    def accuracy_norm(self) -> float | None:
        return None if self.num_correct_norm is None or not self.num_items else self.num_correct_norm / self.num_items

    @property
    def interval_norm(self) -> tuple[float, float] | None:
        return None if self.num_correct_norm is None else wilson_interval(self.num_correct_norm, self.num_items)


def report_rows(
    database: Database, *, run_ids: Sequence[str] = (), models: Sequence[str] = (), tasks: Sequence[str] = ()
) -> list[ReportRow]:
    """Rows for the runs asked for (all runs when nothing is given), in run order."""
    rows: list[ReportRow] = []
    with database.session() as session:
        runs = find_runs(session, run_ids=run_ids, models=models, tasks=tasks)
        missing = set(run_ids) - {run.id for run in runs}
        if missing:
            raise InvalidRequestError(f"no evaluation run with id {', '.join(sorted(missing))}; "
                                      "`galerne eval report` without --run lists every run")
        for run in runs:
            results = results_of(session, run.id)
            languages = sorted({result.language for result in results})
            slices = [ALL, *languages] if len(languages) > 1 else languages or [ALL]
            for language in slices:
                is_overall = language == ALL or len(slices) == 1
                chosen = [r for r in results if is_overall or r.language == language]
                has_norm = any(r.is_correct_norm is not None for r in chosen)
                rows.append(ReportRow(
                    run_id=run.id, model=run.model, task=run.task, language=language,
                    scoring=str(run.config.get("scoring", "")), shots=int(run.config.get("shots") or 0),
                    num_items=len(chosen), num_correct=sum(r.is_correct for r in chosen),
                    num_correct_norm=sum(bool(r.is_correct_norm) for r in chosen) if has_norm else None,
                    created=run.created_at.strftime("%Y-%m-%d %H:%M"), is_overall=is_overall,
                ))
    return rows


_HEADER = ("task", "language", "model", "n", "accuracy", "95% CI", "acc_norm", "acc_norm 95% CI", "scoring",
           "shots", "run")


def _cells(row: ReportRow) -> tuple[str, ...]:
    low, high = row.interval
    norm = row.accuracy_norm
    norm_interval = row.interval_norm
    return (
        row.task, row.language, row.model, str(row.num_items), f"{row.accuracy:.3f}", f"{low:.3f}-{high:.3f}",
        "" if norm is None else f"{norm:.3f}",
        "" if norm_interval is None else f"{norm_interval[0]:.3f}-{norm_interval[1]:.3f}",
        row.scoring, str(row.shots), row.run_id[:12],
    )


def render(rows: Sequence[ReportRow], fmt: Format) -> str:
    """The comparison table, sorted by task, language and model so models sit next to each other."""
    ordered = sorted(rows, key=lambda r: (r.task, r.language != ALL, r.language, r.model, r.created))
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["task", "language", "model", "n", "accuracy", "ci_low", "ci_high", "acc_norm",
                         "acc_norm_ci_low", "acc_norm_ci_high", "scoring", "shots", "run_id"])
        for row in ordered:
            low, high = row.interval
            norm_low, norm_high = row.interval_norm or (None, None)
            writer.writerow([row.task, row.language, row.model, row.num_items, f"{row.accuracy:.4f}", f"{low:.4f}",
                             f"{high:.4f}", "" if row.accuracy_norm is None else f"{row.accuracy_norm:.4f}",
                             "" if norm_low is None else f"{norm_low:.4f}",
                             "" if norm_high is None else f"{norm_high:.4f}", row.scoring, row.shots, row.run_id])
        return out.getvalue()
    if fmt == "html":
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in _HEADER)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _cells(row)) + "</tr>\n" for row in ordered
        )
        header, pivot = comparison(rows)
        pivot_head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
        pivot_body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>\n" for cells in pivot
        )
        return (
            f"<table>\n<thead><tr>{pivot_head}</tr></thead>\n<tbody>\n{pivot_body}</tbody>\n</table>\n"
            f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"
        )
    header, pivot = comparison(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in pivot]
    lines += ["", "| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in ordered]
    return "\n".join(lines) + "\n"


def comparison(rows: Sequence[ReportRow]) -> tuple[list[str], list[list[str]]]:
    """Models side by side: one line per task and language, one column per model, "acc (low-high)" cells
    from each model's latest run."""
    latest: dict[tuple[str, str, str], ReportRow] = {}
    for row in sorted(rows, key=lambda r: r.created):
        latest[(row.task, row.language, row.model)] = row
    models = sorted({model for _, _, model in latest})
    lines = sorted({(task, language) for task, language, _ in latest}, key=lambda k: (k[0], k[1] != ALL, k[1]))
    table = []
    for task, language in lines:
        cells = [task, language]
        for model in models:
            found = latest.get((task, language, model))
            cells.append(
                "" if found is None else f"{found.accuracy:.3f} ({found.interval[0]:.2f}-{found.interval[1]:.2f})"
            )
        table.append(cells)
    return ["task", "language", *models], table


def plot(rows: Sequence[ReportRow], path: Path) -> None:
    """Grouped bars per benchmark, and per language for each multilingual task, with 95 % intervals.

    The format follows the file's suffix (.png or .svg). Of several runs of one model on one task, the
    latest is drawn.
    """
    if path.suffix.lower() not in (".png", ".svg"):
        raise InvalidRequestError(f"--plot {path}: use a .png or .svg file name")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latest: dict[tuple[str, str, str], ReportRow] = {}
    for row in sorted(rows, key=lambda r: r.created):
        latest[(row.model, row.task, ALL if row.is_overall else row.language)] = row
    models = sorted({row.model for row in latest.values()})
    tasks = sorted({row.task for row in latest.values()})
    multilingual = sorted({row.task for row in latest.values() if not row.is_overall})
    panels = 1 + len(multilingual)
    width = max(7.0, 0.55 * max(len(tasks), 5) * max(1, len(models)))
    figure, axes = plt.subplots(panels, 1, figsize=(width, 3.4 * panels), squeeze=False)
    _bars(axes[0][0], latest, models, tasks, _slice_of_all, "accuracy per benchmark")
    for row_axes, task in zip(axes[1:], multilingual, strict=True):
        languages = sorted({row.language for row in latest.values() if row.task == task and not row.is_overall})
        _bars(row_axes[0], latest, models, languages, _slice_of(task), f"{task} per language")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _slice_of_all(model: str, task: str) -> tuple[str, str, str]:
    return model, task, ALL


def _slice_of(task: str) -> Callable[[str, str], tuple[str, str, str]]:
    return lambda model, language: (model, task, language)


def _bars(axis: Axes, latest: dict[tuple[str, str, str], ReportRow], models: list[str], groups: list[str],
          key: Callable[[str, str], tuple[str, str, str]], title: str) -> None:
    width = 0.8 / max(1, len(models))
    for index, model in enumerate(models):
        heights, errors_low, errors_high, positions = [], [], [], []
        for group_index, group in enumerate(groups):
            row = latest.get(key(model, group))
            if row is None:
                continue
            low, high = row.interval
            positions.append(group_index + (index - (len(models) - 1) / 2) * width)
            heights.append(row.accuracy)
            errors_low.append(row.accuracy - low)
            errors_high.append(high - row.accuracy)
        axis.bar(positions, heights, width, yerr=[errors_low, errors_high], capsize=3, label=model)
    axis.set_xticks(range(len(groups)), groups)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy (95% Wilson CI)")
    axis.set_title(title)
    axis.legend(fontsize="small")
