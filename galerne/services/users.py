"""People using Le Chat: sign-up (open, by invite, or closed), password login, disabling, and the project
their chat traffic is metered and limited under.

Passwords are hashed with argon2id (argon2-cffi's defaults, re-hashed on login when those change); an
unknown e-mail still costs one hash, so a login's timing does not say whether an account exists. Chat
traffic runs as a `Principal` of the user's project, through the same admission, limits and metering as
API keys: one shared project (`chat_project`) or one created per user at sign-up, as the operator chooses.

Example::

    users = UserService(database, UserPolicy(signup="invite"))
    invite = users.invite(email="ada@example.org")               # invite.token is shown once
    ada = users.sign_up(SignUp(email="ada@example.org", password="correct horse", invite=invite.token))
    users.authenticate("ada@example.org", "correct horse")
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from galerne.errors import AuthenticationError, ConflictError, InvalidRequestError, NotFoundError, PermissionDeniedError
from galerne.services import audit
from galerne.services.audit import CLI, Actor
from galerne.services.auth import Principal, project_principal
from galerne.storage import console as console_store
from galerne.storage import tenancy
from galerne.storage import users as store
from galerne.storage.database import Database
from galerne.storage.tables import Invite, Project, User

SignupMode = Literal["open", "invite", "closed"]
ChatProjects = Literal["shared", "per-user"]

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # hashing is deliberately slow: a megabyte "password" must not cost more
MAX_DISPLAY_NAME_LENGTH = 128
LOCALES = ("en", "fr", "de", "es", "it")
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,189}$")
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]*$")
_HASHER = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the e-mail is unknown, so that the answer takes as long as for a wrong password
    (made on first use: hashing is slow on purpose, and every `galerne` command imports this module)."""
    return _HASHER.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class UserPolicy:
    """The operator's choices (from `Settings`): who may sign up, and where chat traffic is metered."""

    signup: SignupMode = "invite"
    chat_projects: ChatProjects = "shared"
    chat_project: str = "chat"
    invite_seconds: int = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class SignUp:
    email: str
    password: str
    display_name: str = ""
    invite: str | None = None
    locale: str | None = None


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: str
    email: str
    display_name: str
    project_id: str | None
    project: str | None
    is_admin: bool
    is_disabled: bool
    locale: str | None
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedInvite:
    token: str  # shown once: only its hash is stored
    email: str | None
    expires_at: datetime


def normalise_email(email: str) -> str:
    """Trimmed and lower-cased, so `Ada@Example.org` and `ada@example.org` are one account."""
    return email.strip().lower()


def token_hash(token: str) -> str:
    """The SHA-256 under which a session or invite token is stored (the tokens are random: no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


class UserService:
    def __init__(
        self, database: Database, policy: UserPolicy | None = None, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._database = database
        self.policy = policy or UserPolicy()
        self._now = clock or (lambda: datetime.now(UTC))

    def sign_up(self, request: SignUp) -> UserInfo:
        """Create an account from the sign-up page, as the mode allows (403 when closed or without an invite)."""
        if self.policy.signup == "closed":
            raise PermissionDeniedError("sign-up is closed; ask the operator for an account", code="signup_closed")
        email = _checked_email(request.email)
        _check_password(request.password)
        with self._database.session() as session:
            invite = self._usable_invite(session, request.invite, email) if self.policy.signup == "invite" else None
            user = self._add(session, email, request.password, request.display_name, locale=request.locale)
            if invite is not None and not store.claim_invite(session, invite.id, user.id, self._now()):
                raise PermissionDeniedError("this invite was already used; ask for a new one", code="invite_invalid")
            return user_info(user)

    def create(
        self, email: str, password: str, *, display_name: str = "", is_admin: bool = False, project: str | None = None
    ) -> UserInfo:
        """Create an account as the operator (`galerne users create`), whatever the sign-up mode."""
        email = _checked_email(email)
        _check_password(password)
        with self._database.session() as session:
            owner = None
            if project is not None:
                owner = tenancy.find_project(session, project)
                if owner is None:
                    raise NotFoundError(f"no project named {project!r}; `galerne projects list` shows them")
            return user_info(self._add(session, email, password, display_name, is_admin=is_admin, project=owner))

    def authenticate(self, email: str, password: str) -> UserInfo:
        """The user whose password this is (and their last login set now), or 401; a disabled account is 403."""
        email = normalise_email(email)
        if len(password) > MAX_PASSWORD_LENGTH:
            raise AuthenticationError("wrong e-mail or password", code="invalid_credentials")
        with self._database.session() as session:
            user = store.find_user_by_email(session, email)
            if user is None or user.password_hash is None:
                _verify(_dummy_hash(), password)
                raise AuthenticationError("wrong e-mail or password", code="invalid_credentials")
            if not _verify(user.password_hash, password):
                raise AuthenticationError("wrong e-mail or password", code="invalid_credentials")
            if user.is_disabled:
                raise PermissionDeniedError("this account is disabled; ask the operator", code="account_disabled")
            if _HASHER.check_needs_rehash(user.password_hash):
                user.password_hash = _HASHER.hash(password)
            if user.project is None:  # its project was deleted since: meter it as the policy says now
                user.project = self._project_for(session, user.id)
            user.last_login_at = self._now()
            return user_info(user)

    def get(self, user_id: str) -> UserInfo:
        with self._database.session() as session:
            return user_info(self._user_or_404(session, user_id))

    def list_users(self) -> list[UserInfo]:
        with self._database.session() as session:
            return [user_info(user) for user in store.list_users(session)]

    def set_disabled(self, email_or_id: str, is_disabled: bool = True) -> UserInfo:
        """Disable (or enable again) an account; disabling also ends its sessions at once."""
        with self._database.session() as session:
            user = self._user_or_404(session, email_or_id)
            user.is_disabled = is_disabled
            if is_disabled:
                store.delete_user_sessions(session, user.id)
            return user_info(user)

    def update_profile(self, user_id: str, *, display_name: str | None = None, locale: str | None = None) -> UserInfo:
        """Change the display name and/or the language (`""` for the browser's)."""
        with self._database.session() as session:
            user = self._user_or_404(session, user_id)
            if display_name is not None:
                user.display_name = _checked_display_name(display_name)
            if locale is not None:
                user.locale = _checked_locale(locale)
            return user_info(user)

    def change_password(self, user_id: str, current: str, new: str, *, keep_session: str | None = None) -> None:
        """Set a new password after checking the current one; every other session of the user ends."""
        _check_password(new)
        with self._database.session() as session:
            user = self._user_or_404(session, user_id)
            if user.password_hash is None or not _verify(user.password_hash, current[:MAX_PASSWORD_LENGTH]):
                raise InvalidRequestError("the current password is wrong", param="current_password",
                                          code="wrong_password")
            user.password_hash = _HASHER.hash(new)
            store.delete_user_sessions(session, user.id, keep=keep_session)

    def invite(self, email: str | None = None, *, expires_seconds: int | None = None) -> CreatedInvite:
        """A single-use sign-up token, for anyone holding it or for one e-mail address."""
        wanted = _checked_email(email) if email else None
        token = secrets.token_urlsafe(24)
        expires_at = self._now() + timedelta(seconds=expires_seconds or self.policy.invite_seconds)
        with self._database.session() as session:
            store.add_invite(
                session, Invite(id=token_hash(token), email=wanted, created_at=self._now(), expires_at=expires_at)
            )
        return CreatedInvite(token=token, email=wanted, expires_at=expires_at)

    def grant(self, email_or_id: str, project: str, *, actor: Actor = CLI) -> UserInfo:
        """Make a user a member of a project: in the console they manage its keys and read its usage."""
        with self._database.session() as session:
            user = self._user_or_404(session, email_or_id)
            owner = tenancy.find_project(session, project)
            if owner is None:
                raise NotFoundError(f"no project named {project!r}; `galerne projects list` shows them",
                                    param="project")
            if console_store.add_member(session, user.id, owner.id, self._now()):
                audit.record(session, actor, "member.grant", now=self._now(), project_id=owner.id, target=user.email,
                             details={"project": owner.name})
            return user_info(user)

    def revoke_membership(self, email_or_id: str, project: str, *, actor: Actor = CLI) -> UserInfo:
        """Take a project away from a user's console (404 when they were not a member)."""
        with self._database.session() as session:
            user = self._user_or_404(session, email_or_id)
            owner = tenancy.find_project(session, project)
            if owner is None or not console_store.remove_member(session, user.id, owner.id):
                raise NotFoundError(f"{user.email} is not a member of project {project!r}", param="project")
            audit.record(session, actor, "member.remove", now=self._now(), project_id=owner.id, target=user.email,
                         details={"project": owner.name})
            return user_info(user)

    def principal_for(self, user_id: str) -> Principal:
        """The user's chat traffic as a caller of the services: their project's limits, budgets and models."""
        with self._database.session() as session:
            user = self._user_or_404(session, user_id)
            return user_principal(user)

    def _add(
        self, session: Session, email: str, password: str, display_name: str, *, is_admin: bool = False,
        project: Project | None = None, locale: str | None = None,
    ) -> User:
        if store.find_user_by_email(session, email) is not None:
            raise ConflictError(f"an account for {email} already exists", param="email")
        user_id = secrets.token_hex(8)
        user = User(
            id=user_id, email=email, display_name=_checked_display_name(display_name) or email.split("@")[0],
            password_hash=_HASHER.hash(password), is_admin=is_admin, created_at=self._now(),
            locale=_checked_locale(locale) if locale else None, is_disabled=False,
        )
        user.project = project or self._project_for(session, user_id)
        try:
            return store.add_user(session, user)
        except IntegrityError as exc:  # another request created it between the check and the insert
            raise ConflictError(f"an account for {email} already exists", param="email") from exc

    def _project_for(self, session: Session, user_id: str) -> Project:
        """The shared chat project (created unlimited on first use), or a new project for this user with the
        shared one's limits as a template."""
        template = tenancy.find_project(session, self.policy.chat_project)
        if self.policy.chat_projects == "shared":
            if template is not None:
                return template
            return tenancy.add_project(
                session, Project(id=secrets.token_hex(8), name=self.policy.chat_project, created_at=self._now())
            )
        project = Project(id=secrets.token_hex(8), name=f"user-{user_id}", created_at=self._now(), is_disabled=False)
        if template is not None:
            for field in ("allowed_models", "requests_per_minute", "tokens_per_minute", "max_concurrent_requests",
                          "monthly_token_budget", "monthly_budget_micros"):
                setattr(project, field, getattr(template, field))
        return tenancy.add_project(session, project)

    def _usable_invite(self, session: Session, token: str | None, email: str) -> Invite:
        invite = store.find_invite(session, token_hash(token)) if token else None
        if invite is None:
            raise PermissionDeniedError("sign-up needs an invite; ask the operator for one", code="invite_required")
        if invite.used_at is not None or invite.expires_at <= self._now():
            raise PermissionDeniedError("this invite was already used or has expired; ask for a new one",
                                        code="invite_invalid")
        if invite.email is not None and invite.email != email:
            raise PermissionDeniedError("this invite is for another e-mail address", code="invite_invalid")
        return invite

    @staticmethod
    def _user_or_404(session: Session, email_or_id: str) -> User:
        user = store.find_user_by_email(session, normalise_email(email_or_id)) or store.find_user(
            session, email_or_id
        )
        if user is None:
            raise NotFoundError(f"no user {email_or_id!r}; `galerne users list` shows them", param="user")
        return user


def user_principal(user: User) -> Principal:
    """A user's project as a caller; 403 when they have none or it is disabled."""
    project = user.project
    if project is None:
        raise PermissionDeniedError("your account has no chat project; log in again or ask the operator")
    if project.is_disabled:
        raise PermissionDeniedError(f"chat project {project.name!r} is disabled; ask the operator")
    return project_principal(project, user_id=user.id, is_admin=False)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _checked_email(email: str) -> str:
    normalised = normalise_email(email)
    if len(normalised) > 254 or not _EMAIL.match(normalised):
        raise InvalidRequestError("this is not an e-mail address (name@example.org)", param="email",
                                  code="invalid_email")
    return normalised


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequestError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters", param="password",
                                  code="password_too_short")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidRequestError(f"the password may have at most {MAX_PASSWORD_LENGTH} characters",
                                  param="password", code="password_too_long")


def _checked_display_name(name: str) -> str:
    name = name.strip()
    if len(name) > MAX_DISPLAY_NAME_LENGTH or not _PRINTABLE.match(name):
        raise InvalidRequestError(f"the display name must be printable text of at most {MAX_DISPLAY_NAME_LENGTH} "
                                  "characters", param="display_name", code="invalid_display_name")
    return name


def _checked_locale(locale: str) -> str | None:
    """`""` clears the choice (the browser's language then applies)."""
    if locale == "":
        return None
    if locale not in LOCALES:
        raise InvalidRequestError(f"unknown language {locale!r}; choose one of {', '.join(LOCALES)}",
                                  param="locale", code="invalid_locale")
    return locale


def user_info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id, email=user.email, display_name=user.display_name,
        project_id=user.project.id if user.project is not None else None,
        project=user.project.name if user.project is not None else None, is_admin=user.is_admin,
        is_disabled=user.is_disabled, locale=user.locale, created_at=user.created_at, last_login_at=user.last_login_at,
    )
