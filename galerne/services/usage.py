"""Usage reports: sums of tokens, requests and cost by project, key, model and day, as rows, CSV or a table.

They read the daily rollups only, so a report over months of traffic stays a small query.

Example::

    rows = reports.aggregate(["project", "model"], project="research", since=date(2026, 11, 1))
    print(as_table(rows))
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date
from typing import Any

from galerne.errors import InvalidRequestError
from galerne.services.accounts import project_or_404
from galerne.storage.database import Database
from galerne.storage.tables import MICROS_PER_UNIT
from galerne.storage.usage import UsageFilter, UsageGrouping, aggregate_usage


class UsageReports:
    def __init__(self, database: Database) -> None:
        self._database = database

    def aggregate(
        self,
        group_by: Sequence[str],
        *,
        project: str | None = None,
        key_id: str | None = None,
        model: str | None = None,
        since: date | None = None,
        until: date | None = None,
    ) -> list[dict[str, Any]]:
        """One row per group; `cost` is in the catalogue's currency, `total_tokens` = prompt + completion."""
        groupings = [_grouping(name) for name in group_by]
        with self._database.session() as session:
            project_id = project_or_404(session, project).id if project is not None else None
            where = UsageFilter(project_id=project_id, key_id=key_id, model=model, since=since, until=until)
            rows = aggregate_usage(session, groupings, where)
        for row in rows:
            row["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
            row["cost"] = row.pop("cost_micros") / MICROS_PER_UNIT
            if "day" in row:
                row["day"] = row["day"].isoformat()
        return rows


def _grouping(name: str) -> UsageGrouping:
    try:
        return UsageGrouping(name)
    except ValueError as exc:
        choices = ", ".join(grouping.value for grouping in UsageGrouping)
        raise InvalidRequestError(f"cannot group usage by {name!r}; choose from {choices}", param="group_by") from exc


def as_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def as_table(rows: list[dict[str, Any]]) -> str:
    """Aligned columns for a terminal."""
    if not rows:
        return "no usage recorded for this selection"
    columns = list(rows[0])
    cells = [[_cell(row[column]) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") or "0"
    return str(value)
