"""Authentication: every way a key can be wrong is a 401 that says which; a good key finds its project."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from galerne.catalog import default_catalog
from galerne.errors import AuthenticationError
from galerne.services.accounts import AccountService, ProjectLimitsSpec, ProjectSpec
from galerne.services.auth import Authenticator
from galerne.storage.database import Database


@pytest.fixture
def accounts(database: Database) -> AccountService:
    service = AccountService(database, default_catalog())
    service.create_project(ProjectSpec(name="p", requests_per_minute=5, allowed_models=["smollm2"]))
    return service


async def test_a_good_key_finds_its_project_and_limits(accounts: AccountService, database: Database) -> None:
    key = accounts.create_key("p")
    principal = await Authenticator(database).authenticate(key.key)
    assert (principal.project_name, principal.key_id, principal.is_admin) == ("p", key.id, False)
    assert principal.limits.requests_per_minute == 5
    assert principal.may_use("smollm2-135m-instruct") and not principal.may_use("other")


@pytest.mark.parametrize(
    ("token", "says"),
    [
        (None, "no API key"),
        ("", "no API key"),
        ("sk-openai-style", "malformed"),
        ("gal-000000000000.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "invalid API key"),
    ],
)
async def test_missing_malformed_or_unknown_keys_are_refused(
    accounts: AccountService, database: Database, token: str | None, says: str
) -> None:
    with pytest.raises(AuthenticationError, match=says):
        await Authenticator(database).authenticate(token)


async def test_a_wrong_secret_is_refused(accounts: AccountService, database: Database) -> None:
    key = accounts.create_key("p")
    forged = key.key[:-4] + ("AAAA" if not key.key.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthenticationError, match="invalid API key"):
        await Authenticator(database).authenticate(forged)


async def test_revoked_expired_and_disabled_are_refused(accounts: AccountService, database: Database) -> None:
    authenticator = Authenticator(database, cache_seconds=0)
    revoked = accounts.create_key("p")
    accounts.revoke_key(revoked.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        await authenticator.authenticate(revoked.key)
    expired = accounts.create_key("p", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(AuthenticationError, match="expired"):
        await authenticator.authenticate(expired.key)
    good = accounts.create_key("p")
    accounts.update_project("p", ProjectLimitsSpec(is_disabled=True))
    with pytest.raises(AuthenticationError, match="disabled"):
        await authenticator.authenticate(good.key)


async def test_changes_apply_after_the_cache_time_or_at_once_when_forgotten(
    accounts: AccountService, database: Database
) -> None:
    authenticator = Authenticator(database, cache_seconds=60)
    key = accounts.create_key("p")
    await authenticator.authenticate(key.key)
    accounts.revoke_key(key.id)
    assert (await authenticator.authenticate(key.key)).key_id == key.id  # still cached
    authenticator.forget(key.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        await authenticator.authenticate(key.key)
