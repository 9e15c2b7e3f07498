"""Accounts of Le Chat on real databases (SQLite and PostgreSQL): sign-up modes, invites, argon2 logins,
disabling, password changes, and the project a user's chat traffic runs under."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from galerne.catalog import default_catalog
from galerne.errors import AuthenticationError, ConflictError, InvalidRequestError, NotFoundError, PermissionDeniedError
from galerne.services.accounts import AccountService, ProjectLimitsSpec, ProjectSpec
from galerne.services.sessions import SessionService
from galerne.services.users import SignUp, UserPolicy, UserService
from galerne.storage.database import Database
from galerne.storage.tables import User

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_open_sign_up_then_login_with_any_case_of_the_email(database: Database) -> None:
    users = UserService(database, UserPolicy(signup="open"))
    made = users.sign_up(SignUp(email=" Ada@Example.org ", password=PASSWORD, display_name="Ada"))
    assert made.email == "ada@example.org"
    assert users.authenticate("ADA@example.org", PASSWORD).id == made.id
    with database.session() as session:
        stored = session.get(User, made.id)
        assert stored is not None and stored.password_hash is not None
        assert stored.password_hash.startswith("$argon2id$") and PASSWORD not in stored.password_hash
        assert stored.last_login_at is not None


def test_wrong_password_unknown_email_and_duplicates_are_refused(database: Database) -> None:
    users = UserService(database, UserPolicy(signup="open"))
    users.sign_up(SignUp(email="bob@example.org", password=PASSWORD))
    for email, password in (("bob@example.org", "wrong password"), ("nobody@example.org", PASSWORD)):
        with pytest.raises(AuthenticationError) as refused:
            users.authenticate(email, password)
        assert refused.value.code == "invalid_credentials"
    with pytest.raises(ConflictError):
        users.sign_up(SignUp(email="BOB@example.org", password=PASSWORD))
    with pytest.raises(InvalidRequestError) as short:
        users.sign_up(SignUp(email="carol@example.org", password="short"))
    assert short.value.code == "password_too_short"
    with pytest.raises(InvalidRequestError) as not_email:
        users.sign_up(SignUp(email="not an email", password=PASSWORD))
    assert not_email.value.code == "invalid_email"


def test_closed_mode_refuses_sign_up_but_the_operator_can_create(database: Database) -> None:
    users = UserService(database, UserPolicy(signup="closed"))
    with pytest.raises(PermissionDeniedError) as refused:
        users.sign_up(SignUp(email="dan@example.org", password=PASSWORD))
    assert refused.value.code == "signup_closed"
    created = users.create("dan@example.org", PASSWORD, display_name="Dan")
    assert users.authenticate("dan@example.org", PASSWORD).id == created.id


def test_invites_are_single_use_bound_to_their_email_and_expire(database: Database) -> None:
    clock = Clock()
    users = UserService(database, UserPolicy(signup="invite"), clock=clock)
    with pytest.raises(PermissionDeniedError) as without:
        users.sign_up(SignUp(email="eve@example.org", password=PASSWORD))
    assert without.value.code == "invite_required"
    with pytest.raises(PermissionDeniedError):
        users.sign_up(SignUp(email="eve@example.org", password=PASSWORD, invite="made-up"))

    anyone = users.invite()
    users.sign_up(SignUp(email="eve@example.org", password=PASSWORD, invite=anyone.token))
    with pytest.raises(PermissionDeniedError) as reused:
        users.sign_up(SignUp(email="fay@example.org", password=PASSWORD, invite=anyone.token))
    assert reused.value.code == "invite_invalid"

    for_gus = users.invite("gus@example.org")
    with pytest.raises(PermissionDeniedError):
        users.sign_up(SignUp(email="hal@example.org", password=PASSWORD, invite=for_gus.token))
    users.sign_up(SignUp(email="gus@example.org", password=PASSWORD, invite=for_gus.token))

    late = users.invite(expires_seconds=60)
    clock.now += timedelta(seconds=61)
    with pytest.raises(PermissionDeniedError):
        users.sign_up(SignUp(email="ivy@example.org", password=PASSWORD, invite=late.token))


def test_a_disabled_user_cannot_log_in_and_loses_their_sessions(database: Database) -> None:
    users = UserService(database, UserPolicy(signup="open"))
    sessions = SessionService(database)
    user = users.sign_up(SignUp(email="jo@example.org", password=PASSWORD))
    started = sessions.start(user.id)
    users.set_disabled("jo@example.org")
    assert sessions.resolve(started.token) is None
    with pytest.raises(PermissionDeniedError) as refused:
        users.authenticate("jo@example.org", PASSWORD)
    assert refused.value.code == "account_disabled"
    users.set_disabled(user.id, False)
    assert users.authenticate("jo@example.org", PASSWORD).id == user.id
    with pytest.raises(NotFoundError):
        users.set_disabled("nobody@example.org")


def test_changing_the_password_checks_the_old_one_and_ends_other_sessions(database: Database) -> None:
    users = UserService(database, UserPolicy(signup="open"))
    sessions = SessionService(database)
    user = users.sign_up(SignUp(email="kim@example.org", password=PASSWORD))
    here, elsewhere = sessions.start(user.id), sessions.start(user.id)
    here_id = sessions.resolve(here.token)
    assert here_id is not None
    with pytest.raises(InvalidRequestError) as wrong:
        users.change_password(user.id, "not the password", "a new password")
    assert wrong.value.code == "wrong_password"
    users.change_password(user.id, PASSWORD, "a new password", keep_session=here_id.id)
    assert sessions.resolve(here.token) is not None
    assert sessions.resolve(elsewhere.token) is None
    with pytest.raises(AuthenticationError):
        users.authenticate("kim@example.org", PASSWORD)
    users.authenticate("kim@example.org", "a new password")


def test_shared_chat_project_is_created_once_and_carries_its_limits(database: Database) -> None:
    accounts = AccountService(database, default_catalog())
    users = UserService(database, UserPolicy(signup="open", chat_projects="shared", chat_project="staff-chat"))
    first = users.sign_up(SignUp(email="lee@example.org", password=PASSWORD))
    second = users.sign_up(SignUp(email="max@example.org", password=PASSWORD))
    assert first.project == second.project == "staff-chat"
    accounts.update_project("staff-chat", ProjectLimitsSpec(requests_per_minute=7))
    principal = users.principal_for(first.id)
    assert principal.project_name == "staff-chat" and principal.limits.requests_per_minute == 7
    assert principal.key_id is None and principal.usage_key == f"user:{first.id}"


def test_per_user_projects_copy_the_template_limits(database: Database) -> None:
    accounts = AccountService(database, default_catalog())
    accounts.create_project(ProjectSpec(name="chat", requests_per_minute=11, tokens_per_minute=5000))
    users = UserService(database, UserPolicy(signup="open", chat_projects="per-user", chat_project="chat"))
    one = users.sign_up(SignUp(email="ned@example.org", password=PASSWORD))
    two = users.sign_up(SignUp(email="oli@example.org", password=PASSWORD))
    assert one.project == f"user-{one.id}" and two.project == f"user-{two.id}"
    principal = users.principal_for(one.id)
    assert principal.limits.requests_per_minute == 11 and principal.limits.tokens_per_minute == 5000
    accounts.update_project(f"user-{one.id}", ProjectLimitsSpec(is_disabled=True))
    with pytest.raises(PermissionDeniedError):
        users.principal_for(one.id)
    assert users.principal_for(two.id).project_name == f"user-{two.id}"


def test_profile_changes_are_checked(database: Database) -> None:
    users = UserService(database, UserPolicy(signup="open"))
    user = users.sign_up(SignUp(email="pia@example.org", password=PASSWORD))
    assert user.display_name == "pia"
    changed = users.update_profile(user.id, display_name="Pia M.", locale="de")
    assert (changed.display_name, changed.locale) == ("Pia M.", "de")
    assert users.update_profile(user.id, locale="").locale is None
    with pytest.raises(InvalidRequestError):
        users.update_profile(user.id, locale="xx")
    with pytest.raises(InvalidRequestError):
        users.update_profile(user.id, display_name="bad\x00name")
