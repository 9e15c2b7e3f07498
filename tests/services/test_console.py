"""The console's service on SQLite and PostgreSQL: members see only their projects (404 otherwise), every
change is audited whichever door it came through, refused requests are counted by reason, and the usage
report is the same few rollup queries for a quiet project and a busy one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from galerne.catalog import default_catalog
from galerne.errors import NotFoundError, PermissionDeniedError, RateLimitExceededError
from galerne.services.accounts import AccountService, ProjectLimitsSpec, ProjectSpec
from galerne.services.console import ConsoleService, Viewer
from galerne.services.limits import InProcessLimiter, RateLimits
from galerne.services.metering import MeterOptions, UsageMeter
from galerne.services.models import ModelRegistry
from galerne.services.users import UserService
from galerne.storage.database import Database
from galerne.storage.usage import add_usage
from tests.services.test_conversation_queries import counted

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def accounts(database: Database) -> AccountService:
    return AccountService(database, default_catalog(), clock=lambda: NOW)


@pytest.fixture
def console(database: Database, accounts: AccountService) -> ConsoleService:
    # The usage, keys and audit use cases never touch an engine: a registry without loaded models will do.
    return ConsoleService(database, accounts, ModelRegistry(default_catalog(), {}), None, clock=lambda: NOW)


def _usage_rows(
    project_id: str, key_id: str, num_rows: int, model: str = "smollm2-135m-instruct"
) -> list[dict[str, Any]]:
    return [
        {"created_at": NOW - timedelta(days=index % 20, minutes=index % 60), "project_id": project_id,
         "key_id": key_id, "model": model, "prompt_tokens": 10, "completion_tokens": 5, "cost_micros": 7,
         "ttft_ms": 5, "duration_ms": 20, "status": "ok"}
        for index in range(num_rows)
    ]


def test_a_member_sees_only_their_projects_and_gets_404_for_others(
    database: Database, accounts: AccountService, console: ConsoleService
) -> None:
    users = UserService(database, clock=lambda: NOW)
    ours = accounts.create_project(ProjectSpec(name="ours"))
    theirs = accounts.create_project(ProjectSpec(name="theirs"))
    our_key = accounts.create_key("ours", name="ci")
    their_key = accounts.create_key("theirs", name="prod")
    member = users.create("member@example.org", "correct horse battery")
    users.grant(member.email, "ours")
    viewer = Viewer(user_id=member.id, label=member.email, is_operator=False)
    operator = Viewer(user_id="op", label="op@example.org", is_operator=True)

    assert [project.name for project in console.projects(viewer)] == ["ours"]
    assert {project.name for project in console.projects(operator)} == {"ours", "theirs", "chat"}  # chat: the user's
    assert console.key(viewer, our_key.id).key.name == "ci"
    for attempt in (
        lambda: console.key(viewer, their_key.id),
        lambda: console.revoke_key(viewer, their_key.id),
        lambda: console.usage(viewer, theirs.id),
        lambda: console.usage(viewer, "theirs"),
        lambda: console.usage(viewer, ours.id, key_id=their_key.id),  # another project's key through ours
        lambda: console.keys(viewer, "theirs"),
        lambda: console.create_key(viewer, "theirs", name="x"),
    ):
        with pytest.raises(NotFoundError):
            attempt()
    with pytest.raises(PermissionDeniedError):
        console.update_limits(viewer, "ours", ProjectLimitsSpec(requests_per_minute=1_000_000))
    with pytest.raises(PermissionDeniedError):
        console.audit(viewer)
    created = console.create_key(viewer, "ours", name="member's")
    assert console.revoke_key(viewer, created.id).revoked_at is not None


def test_every_change_is_audited_with_who_made_it(
    database: Database, accounts: AccountService, console: ConsoleService
) -> None:
    operator = Viewer(user_id="op", label="op@example.org", is_operator=True)
    console.create_project(operator, ProjectSpec(name="research", requests_per_minute=10))
    key = console.create_key(operator, "research", name="ci")
    console.update_limits(operator, "research", ProjectLimitsSpec(requests_per_minute=20, tokens_per_minute=None))
    console.revoke_key(operator, key.id)
    accounts.create_key("research", name="from the cli")  # the CLI's door: actor "cli"

    entries = console.audit(operator)
    assert [(entry.actor, entry.action) for entry in entries] == [
        ("cli", "key.create"),
        ("op@example.org", "key.revoke"),
        ("op@example.org", "project.update"),
        ("op@example.org", "key.create"),
        ("op@example.org", "project.create"),
    ]
    assert entries[2].details == {"requests_per_minute": [10, 20]}  # only what changed, before and after
    assert entries[1].target == key.id and entries[1].details["name"] == "ci"
    assert key.key not in str([entry.details for entry in entries])  # never a secret


async def test_refusals_are_counted_by_reason_and_reported(
    database: Database, accounts: AccountService, console: ConsoleService, tmp_path: Path
) -> None:
    project = accounts.create_project(ProjectSpec(name="limited"))
    key = accounts.create_key("limited")
    meter = UsageMeter(database, tmp_path / "journal", MeterOptions(is_journalled=False, flush_seconds=3600))
    limiter = InProcessLimiter()
    limits = RateLimits(requests_per_minute=1)
    try:
        await limiter.acquire(project.id, limits, 10)
        for _ in range(3):
            with pytest.raises(RateLimitExceededError) as refused:
                await limiter.acquire(project.id, limits, 10)
            meter.count_refusal(project.id, key.id, refused.value.reason)
        meter.count_refusal(project.id, key.id, "monthly_budget")
        meter.flush()
        meter.count_refusal(project.id, key.id, "monthly_budget")  # a second flush adds to the same day's row
        meter.flush()
    finally:
        meter.close()
    operator = Viewer(user_id="op", label="op", is_operator=True)
    today = datetime.now(UTC).date()
    report = console.usage(operator, "limited", since=today - timedelta(days=1), until=today + timedelta(days=1))
    assert report["refusals"] == {"monthly_budget": 2, "requests_per_minute": 3}


def test_the_usage_report_is_the_same_few_queries_for_a_quiet_and_a_busy_project(
    database: Database, accounts: AccountService, console: ConsoleService
) -> None:
    quiet = accounts.create_project(ProjectSpec(name="quiet", monthly_token_budget=1000))
    busy = accounts.create_project(ProjectSpec(name="busy"))
    quiet_key = accounts.create_key("quiet")
    busy_keys = [accounts.create_key("busy", name=f"k{index}") for index in range(3)]
    with database.session() as session:
        add_usage(session, _usage_rows(quiet.id, quiet_key.id, 3))
        for index, key in enumerate(busy_keys):
            model = ["smollm2-135m-instruct", "gemma3-270m"][index % 2]
            add_usage(session, _usage_rows(busy.id, key.id, 4000, model=model))
    operator = Viewer(user_id="op", label="op", is_operator=True)
    counts = {}
    reports = {}
    for name in ("quiet", "busy"):
        with counted(database) as statements:
            reports[name] = console.usage(operator, name)
        counts[name] = len(statements)
    assert counts["quiet"] == counts["busy"] <= 7, counts
    busy_report = reports["busy"]
    assert busy_report["totals"]["num_requests"] == 12_000
    assert busy_report["totals"]["total_tokens"] == 12_000 * 15
    assert len(busy_report["days"]) == 30 and {row["day"] for row in busy_report["by_day"]} <= set(busy_report["days"])
    assert [row["model"] for row in busy_report["by_model"]] == ["smollm2-135m-instruct", "gemma3-270m"]
    assert [row["num_requests"] for row in busy_report["top_keys"]] == [4000, 4000, 4000]
    assert reports["quiet"]["budget"] == {
        "month": "2026-11-01", "tokens": 45, "token_budget": 1000, "cost": 0.000021, "money_budget": None
    }
    rows = console.keys(operator, "busy")
    assert all(row.last_used_at == NOW for row in rows)  # index 0 of each batch: NOW, the newest
