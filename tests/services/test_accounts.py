"""Projects and keys as the operator manages them; secrets are never stored (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from galerne.catalog import default_catalog
from galerne.errors import ConflictError, InvalidRequestError, ModelNotFoundError, NotFoundError
from galerne.services.accounts import ADMIN_PROJECT, AccountService, ProjectLimitsSpec, ProjectSpec
from galerne.services.keys import hash_secret, parse_key
from galerne.storage.database import Database
from galerne.storage.tables import ApiKey


@pytest.fixture
def accounts(database: Database) -> AccountService:
    return AccountService(database, default_catalog())


def test_a_project_keeps_its_limits_and_resolves_model_aliases(accounts: AccountService) -> None:
    created = accounts.create_project(
        ProjectSpec(name="research", requests_per_minute=20, tokens_per_minute=1000, allowed_models=["smollm2"],
                    monthly_budget=12.5)
    )
    assert created.allowed_models == ["smollm2-135m-instruct"]
    assert accounts.get_project("research") == created
    assert created.monthly_budget == 12.5


def test_update_changes_only_what_is_given_and_null_lifts_a_limit(accounts: AccountService) -> None:
    accounts.create_project(ProjectSpec(name="p", requests_per_minute=20, tokens_per_minute=1000))
    updated = accounts.update_project("p", ProjectLimitsSpec.model_validate({"requests_per_minute": None}))
    assert (updated.requests_per_minute, updated.tokens_per_minute) == (None, 1000)
    disabled = accounts.update_project("p", ProjectLimitsSpec(is_disabled=True))
    assert disabled.is_disabled and disabled.tokens_per_minute == 1000


def test_mistakes_are_clear_errors(accounts: AccountService) -> None:
    accounts.create_project(ProjectSpec(name="p"))
    with pytest.raises(ConflictError):
        accounts.create_project(ProjectSpec(name="p"))
    with pytest.raises(ModelNotFoundError, match="gpt-17"):
        accounts.create_project(ProjectSpec(name="q", allowed_models=["gpt-17"]))
    with pytest.raises(NotFoundError, match="nope"):
        accounts.update_project("nope", ProjectLimitsSpec())
    with pytest.raises(NotFoundError):
        accounts.create_key("nope")
    with pytest.raises(InvalidRequestError, match="--project"):
        accounts.create_key(None)
    with pytest.raises(NotFoundError):
        accounts.revoke_key("000000000000")


def test_keys_are_shown_once_and_stored_only_as_a_hash(accounts: AccountService, database: Database) -> None:
    accounts.create_project(ProjectSpec(name="p"))
    created = accounts.create_key("p", name="ci")
    parsed = parse_key(created.key)
    assert parsed is not None and parsed[0] == created.id
    with database.session() as session:
        row = session.scalars(select(ApiKey)).one()
        stored = " ".join(str(value) for value in vars(row).values())
    assert parsed[1] not in stored
    assert row.secret_hash == hash_secret(parsed[1])
    assert "key" not in accounts.list_keys("p")[0].model_dump()


def test_admin_keys_default_to_the_admin_project(accounts: AccountService) -> None:
    assert not accounts.has_admin_key()
    expired = accounts.create_key(None, is_admin=True, expires_at=datetime.now(UTC) - timedelta(days=1))
    assert expired.project == ADMIN_PROJECT and expired.is_admin
    assert not accounts.has_admin_key()
    admin = accounts.create_key(None, is_admin=True)
    assert admin.project == ADMIN_PROJECT
    assert accounts.has_admin_key()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_no_change_may_take_away_the_last_working_admin_key(accounts: AccountService) -> None:
    admin = accounts.create_key(None, is_admin=True)
    accounts.create_project(ProjectSpec(name="ops"))
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    for change in (ProjectLimitsSpec(expires_at=long_ago), ProjectLimitsSpec(is_disabled=True)):
        with pytest.raises(ConflictError, match="no admin key would work") as refused:
            accounts.update_project(ADMIN_PROJECT, change)
        assert refused.value.code == "would_lock_out_admins" and refused.value.status == 409
        assert "galerne keys create --admin --project NAME" in refused.value.message
    with pytest.raises(ConflictError, match=f"revoking key '{admin.id}'"):
        accounts.revoke_key(admin.id)
    project = accounts.get_project(ADMIN_PROJECT)
    assert (project.expires_at, project.is_disabled) == (None, False)  # refused changes are rolled back
    assert [key.revoked_at for key in accounts.list_keys(ADMIN_PROJECT)] == [None]
    accounts.update_project("ops", ProjectLimitsSpec(is_disabled=True))  # holds no admin key: free to change
    accounts.update_project(ADMIN_PROJECT, ProjectLimitsSpec(expires_at=datetime.now(UTC) + timedelta(days=30)))
    accounts.update_project("ops", ProjectLimitsSpec(is_disabled=False))
    other = accounts.create_key("ops", is_admin=True)  # with a second admin key, the first may go
    accounts.revoke_key(admin.id)
    accounts.update_project(ADMIN_PROJECT, ProjectLimitsSpec(is_disabled=True))
    with pytest.raises(ConflictError):
        accounts.update_project("ops", ProjectLimitsSpec(expires_at=long_ago))
    with pytest.raises(ConflictError):
        accounts.revoke_key(other.id)
    assert accounts.has_admin_key()


def test_a_platform_whose_admin_keys_lapsed_can_be_given_one_again(database: Database) -> None:
    clock = Clock()
    accounts = AccountService(database, default_catalog(), clock=clock)
    accounts.create_key(None, is_admin=True)
    accounts.update_project(ADMIN_PROJECT, ProjectLimitsSpec(expires_at=clock.now + timedelta(hours=1)))
    clock.now += timedelta(hours=2)  # the project expired on its own: nobody can use /admin
    assert not accounts.has_admin_key()
    with pytest.raises(InvalidRequestError, match="--enable --unset expires") as refused:
        accounts.create_key(None, is_admin=True)  # it would be born unusable
    assert "is expired" in refused.value.message and refused.value.code == "project_unusable"
    accounts.update_project(ADMIN_PROJECT, ProjectLimitsSpec(is_disabled=True))  # no key to lose: allowed
    with pytest.raises(InvalidRequestError, match="is disabled"):
        accounts.create_key(None, is_admin=True)
    accounts.update_project(ADMIN_PROJECT, ProjectLimitsSpec.model_validate({"expires_at": None, "is_disabled": False}))
    assert accounts.has_admin_key()  # the old key works again
    assert accounts.create_key(None, is_admin=True).is_admin


def test_revoking_is_kept_in_the_listing(accounts: AccountService) -> None:
    accounts.create_project(ProjectSpec(name="p"))
    key = accounts.create_key("p")
    revoked = accounts.revoke_key(key.id)
    assert revoked.revoked_at is not None
    assert [k.revoked_at is not None for k in accounts.list_keys()] == [True]
