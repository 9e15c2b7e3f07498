"""The audit trail of what moderation policies did: written before the reply that they shaped goes out,
read by `galerne moderation log` and `/admin/moderation`.

Example::

    await audit.record([Finding("staff", "input", Category.HATE, 0.91, "block")], principal, "smollm2", text=None)
    audit.events(project="research", limit=50)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from galerne.moderation_categories import Category
from galerne.services.accounts import project_or_404
from galerne.services.auth import Principal
from galerne.storage import tenancy
from galerne.storage.database import Database
from galerne.storage.moderation_log import ModerationFilter, add_events, list_events


@dataclass(frozen=True, slots=True)
class Finding:
    """A policy acting on one category of one text: `action` is block, flag, refuse or mask."""

    policy: str
    direction: str  # input | output
    category: Category
    score: float
    action: str


class ModerationEventInfo(BaseModel):
    id: int
    created_at: datetime
    project: str | None
    key_id: str | None
    model: str
    policy: str
    direction: str
    category: str
    score: float
    action: str
    text: str | None


class ModerationAudit:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def record(self, findings: Sequence[Finding], principal: Principal, model: str, *, text: str | None) -> None:
        """Store the findings (with `text` only when the policy keeps it) before the caller answers."""
        if not findings:
            return
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = [
            {
                "created_at": now, "project_id": principal.project_id, "key_id": principal.usage_key, "model": model,
                "policy": finding.policy, "direction": finding.direction, "category": finding.category.value,
                "score": round(finding.score, 4), "action": finding.action, "text": text,
            }
            for finding in findings
        ]
        await asyncio.to_thread(self._write, rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self._database.session() as session:
            add_events(session, rows)

    def events(
        self,
        *,
        project: str | None = None,
        since: datetime | None = None,
        action: str | None = None,
        category: str | None = None,
        limit: int = 100,
    ) -> list[ModerationEventInfo]:
        """The newest events first, optionally of one project (by name or id)."""
        with self._database.session() as session:
            project_id = project_or_404(session, project).id if project is not None else None
            names = {p.id: p.name for p in tenancy.list_projects(session)}
            where = ModerationFilter(project_id=project_id, since=since, action=action, category=category)
            return [
                ModerationEventInfo(
                    id=event.id, created_at=event.created_at, project=names.get(event.project_id or ""),
                    key_id=event.key_id, model=event.model, policy=event.policy, direction=event.direction,
                    category=event.category, score=event.score, action=event.action, text=event.text,
                )
                for event in list_events(session, where, limit=limit)
            ]
