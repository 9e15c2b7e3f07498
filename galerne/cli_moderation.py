"""`galerne moderation log`: what moderation policies did, from the audit trail (docs/moderation.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from galerne.cli_accounts import JsonOption, _accounts, _run
from galerne.services.moderation.audit import ModerationAudit
from galerne.services.usage import as_table

moderation_app = typer.Typer(help="Moderation policies' audit trail.")


@moderation_app.command("log")
def log(
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    since: Annotated[datetime | None, typer.Option(help="From this ISO date/time (UTC).")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action: block, flag, refuse or mask.")] = None,
    category: Annotated[str | None, typer.Option(help="Only this category (e.g. pii).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="The newest this many events.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Blocks, flags, refusals and masks, newest first (the text only where a policy keeps it)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with _accounts() as (_, database):
        events = _run(
            lambda: ModerationAudit(database).events(
                project=project, since=since, action=action, category=category, limit=limit
            )
        )
    if as_json:
        typer.echo(json.dumps([event.model_dump(mode="json") for event in events], indent=2))
        return
    if not events:
        typer.echo("no moderation events")
        return
    rows = [
        {
            "time": event.created_at.isoformat(timespec="seconds"), "project": event.project or "", "key":
            event.key_id or "", "model": event.model, "policy": event.policy, "direction": event.direction,
            "category": event.category, "score": f"{event.score:.2f}", "action": event.action,
        }
        for event in events
    ]
    typer.echo(as_table(rows))
