"""`galerne users`: the operator's commands for Le Chat accounts, on the database the server uses.

`create` makes an account whatever the sign-up mode (`GALERNE_SIGNUP`); `invite` prints a single-use
sign-up link for invite-only servers; `disable` ends the user's sessions at once; `grant` makes a user a
member of a project in the console. Every command takes
`--json` for scripts.

Example::

    galerne users create ada@example.org --name "Ada" --password 'correct horse battery'
    galerne users invite --email grace@example.org      # /chat/signup?invite=…
    galerne users disable ada@example.org
    galerne users grant ada@example.org --project research    # her project in the console (/console)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer

from galerne.cli_accounts import _run
from galerne.config import Settings
from galerne.services.usage import as_table
from galerne.services.users import UserInfo, UserPolicy, UserService
from galerne.storage.database import Database

users_app = typer.Typer(help="Create, list, disable and invite Le Chat users.")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@contextmanager
def _users() -> Iterator[UserService]:
    settings = Settings()
    database = _run(lambda: Database.open(settings.resolved_database_url()))
    try:
        policy = UserPolicy(
            signup=settings.signup, chat_projects=settings.chat_projects, chat_project=settings.chat_project
        )
        yield UserService(database, policy)
    finally:
        database.close()


def _as_json(value: Any) -> str:
    def default(item: Any) -> Any:
        return item.isoformat() if isinstance(item, datetime) else str(item)

    if isinstance(value, list):
        return json.dumps([dataclasses.asdict(item) for item in value], indent=2, default=default)
    return json.dumps(dataclasses.asdict(value), indent=2, default=default)


def _show(user: UserInfo, as_json: bool, text: str) -> None:
    typer.echo(_as_json(user) if as_json else text)


@users_app.command("create")
def create_user(
    email: str,
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Asked for when not given.")
    ],
    name: Annotated[str, typer.Option("--name", help="Display name (default: the e-mail's local part).")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="Mark as an administrator of the web app.")] = False,
    project: Annotated[
        str | None, typer.Option(help="Meter their chat under this project (default: GALERNE_CHAT_PROJECTS).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an account, whatever the sign-up mode."""
    with _users() as users:
        user = _run(lambda: users.create(email, password, display_name=name, is_admin=admin, project=project))
    _show(user, as_json, f"created user {user.email} ({user.id}), chat metered under project {user.project}")


@users_app.command("list")
def list_users(as_json: JsonOption = False) -> None:
    """Every account (never a password hash)."""
    with _users() as users:
        found = _run(users.list_users)
    if as_json:
        typer.echo(_as_json(found))
        return
    rows = [
        {
            "email": u.email, "name": u.display_name, "id": u.id, "project": u.project, "admin": u.is_admin,
            "disabled": u.is_disabled, "created": u.created_at.isoformat(timespec="seconds"),
            "last_login": u.last_login_at.isoformat(timespec="seconds") if u.last_login_at else None,
        }
        for u in found
    ]
    typer.echo(as_table(rows) if rows else "no users yet: galerne users create EMAIL, or galerne users invite")


@users_app.command("disable")
def disable_user(email_or_id: str, as_json: JsonOption = False) -> None:
    """Refuse their logins and end their sessions now."""
    with _users() as users:
        user = _run(lambda: users.set_disabled(email_or_id, True))
    _show(user, as_json, f"disabled user {user.email}; their sessions have ended")


@users_app.command("enable")
def enable_user(email_or_id: str, as_json: JsonOption = False) -> None:
    """Let a disabled user log in again."""
    with _users() as users:
        user = _run(lambda: users.set_disabled(email_or_id, False))
    _show(user, as_json, f"enabled user {user.email}")


@users_app.command("grant")
def grant_project(
    email_or_id: str,
    project: Annotated[str, typer.Option(help="The project they may manage in the console (/console).")],
    revoke: Annotated[bool, typer.Option("--revoke", help="Take the project away instead.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Make a user a member of a project in the console: its keys, usage and models (operators, created
    with --admin, see every project)."""
    with _users() as users:
        if revoke:
            user = _run(lambda: users.revoke_membership(email_or_id, project))
            _show(user, as_json, f"{user.email} is no longer a member of project {project}")
        else:
            user = _run(lambda: users.grant(email_or_id, project))
            _show(user, as_json, f"{user.email} is now a member of project {project} in the console")


@users_app.command("invite")
def invite_user(
    email: Annotated[str | None, typer.Option(help="Only this address may use it (default: whoever holds it).")] = None,
    days: Annotated[float, typer.Option(min=0.001, help="Days until it expires.")] = 7.0,
    as_json: JsonOption = False,
) -> None:
    """Print a single-use sign-up link (for GALERNE_SIGNUP=invite); shown once, only its hash is kept."""
    with _users() as users:
        invite = _run(lambda: users.invite(email, expires_seconds=max(1, round(days * 86400))))
    link = f"/chat/signup?invite={invite.token}"
    if as_json:
        typer.echo(json.dumps({"token": invite.token, "link": link, "email": invite.email,
                               "expires_at": invite.expires_at.isoformat()}, indent=2))
        return
    who = f" for {invite.email}" if invite.email else ""
    typer.echo(f"{link}\n(invite{who}, single use, expires {invite.expires_at.isoformat(timespec='minutes')}; "
               "append it to the server's address, e.g. https://chat.example.org" + link + ")")
