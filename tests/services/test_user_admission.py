"""A chat user's traffic goes through the same admission as an API key's: their project's limits apply,
and usage is recorded under the project with the key column `user:<id>`."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from galerne.catalog import default_catalog
from galerne.errors import RateLimitExceededError
from galerne.services.accounts import AccountService, ProjectLimitsSpec
from galerne.services.admission import Admission
from galerne.services.limits import InProcessLimiter
from galerne.services.metering import MeterOptions, UsageMeter, UsageStatus
from galerne.services.users import SignUp, UserPolicy, UserService
from galerne.storage.database import Database
from galerne.storage.tables import UsageRecord


async def test_user_traffic_is_limited_and_metered_under_their_project(database: Database, tmp_path: Path) -> None:
    catalog = default_catalog()
    users = UserService(database, UserPolicy(signup="open", chat_projects="per-user"))
    user = users.sign_up(SignUp(email="meter@example.org", password="correct horse battery"))
    AccountService(database, catalog).update_project(f"user-{user.id}", ProjectLimitsSpec(requests_per_minute=1))
    principal = users.principal_for(user.id)
    meter = UsageMeter(database, tmp_path / "journal", MeterOptions(flush_seconds=3600))
    admission = Admission(InProcessLimiter(), meter, database)
    entry = catalog.default_entry()

    ticket = await admission.admit(principal, entry, reserved_tokens=50)
    with pytest.raises(RateLimitExceededError):
        await admission.admit(principal, entry, reserved_tokens=50)
    admission.settle(ticket, prompt_tokens=12, completion_tokens=7, ttft_seconds=0.1, status=UsageStatus.OK)
    meter.close()

    with database.session() as session:
        records = session.scalars(select(UsageRecord)).all()
    assert [(r.project_id, r.key_id, r.prompt_tokens, r.completion_tokens) for r in records] == [
        (user.project_id, f"user:{user.id}", 12, 7)
    ]
