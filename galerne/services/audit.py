"""The audit trail: who created or revoked which key, created a project or changed which limit, and when.

Every change to projects, keys and members records an event in the same transaction as the change, from
whichever door it came through — the console (the user's e-mail), the admin API (`admin key <id>`) or the
CLI (`cli`) — so the trail cannot miss a change that happened, nor show one that was rolled back.
Operators read it on the console's audit page.

Example::

    accounts.revoke_key("3f9a0c1b2d4e", actor=Actor("ada@example.org", user_id="a1b2"))
    AuditLog(database).recent()[0].action  # "key.revoke"
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from galerne.storage import console as store
from galerne.storage.console_tables import AuditEvent
from galerne.storage.database import Database


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change: what a reader recognises, and the web user's id when there is one."""

    label: str
    user_id: str | None = None


CLI = Actor("cli")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    created_at: datetime
    actor: str
    action: str  # key.create, key.revoke, project.create, project.update, member.grant, member.remove
    project_id: str | None
    target: str
    details: dict[str, Any]


def record(
    session: Session, actor: Actor, action: str, *, now: datetime, project_id: str | None, target: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an event to the caller's transaction (it commits or rolls back with the change)."""
    store.add_audit(session, AuditEvent(
        created_at=now, actor=actor.label[:254], actor_id=actor.user_id, action=action, project_id=project_id,
        target=target[:128], details=details or {},
    ))


class AuditLog:
    def __init__(self, database: Database) -> None:
        self._database = database

    def recent(self, *, limit: int = 200, before_id: int | None = None) -> list[AuditEntry]:
        """The newest events first; `before_id` (the last id of a page) reads the next page."""
        with self._database.session() as session:
            return [
                AuditEntry(id=event.id, created_at=event.created_at, actor=event.actor, action=event.action,
                           project_id=event.project_id, target=event.target, details=dict(event.details or {}))
                for event in store.list_audit(session, limit=limit, before_id=before_id)
            ]
