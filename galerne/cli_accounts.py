"""`galerne projects|keys|usage`: the operator's commands, on the database the server uses.

They work while a server runs on the same database (SQLite in WAL mode, or PostgreSQL); a change
reaches running servers within their key cache time (`GALERNE_KEY_CACHE_SECONDS`, 1 s). Every command
takes `--json` for scripts.

Example::

    galerne projects create research --rpm 60 --tpm 100000 --models smollm2 --json
    galerne keys create --project research --json      # {"key": "gal-…", "id": "…", …}
    galerne usage --project research --by model,day
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from galerne.catalog import load_catalog
from galerne.config import Settings
from galerne.errors import GalerneError
from galerne.services.accounts import AccountService, ProjectLimitsSpec, ProjectSpec
from galerne.services.usage import UsageReports, as_csv, as_table
from galerne.storage.database import Database

projects_app = typer.Typer(help="Create, list and update projects (limits, budgets, allowed models).")
keys_app = typer.Typer(help="Create, list and revoke API keys.")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
_T = TypeVar("_T")

# Options shared by `projects create` and `projects update`; None means "not given".
RpmOption = Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute.")]
TpmOption = Annotated[int | None, typer.Option("--tpm", min=1, help="Tokens per minute (prompt + completion).")]
ConcurrencyOption = Annotated[int | None, typer.Option("--concurrency", min=1, help="Requests at once.")]
ModelsOption = Annotated[str | None, typer.Option("--models", help="Comma-separated model ids or aliases.")]
TokenBudgetOption = Annotated[int | None, typer.Option("--monthly-tokens", min=0, help="Tokens per calendar month.")]
MoneyBudgetOption = Annotated[
    float | None, typer.Option("--monthly-budget", min=0, help="Spend per calendar month, at catalogue prices.")
]
ExpiresOption = Annotated[datetime | None, typer.Option("--expires", help="ISO date/time (UTC) it stops working.")]
PolicyOption = Annotated[
    str | None, typer.Option("--policy", help="A moderation policy of the catalogue for all its requests.")
]


@contextmanager
def _accounts() -> Iterator[tuple[AccountService, Database]]:
    settings = Settings()
    database = _run(lambda: Database.open(settings.resolved_database_url()))
    try:
        catalog = _run(lambda: load_catalog(settings.config, settings.builtin_models))
        yield AccountService(database, catalog), database
    finally:
        database.close()


def _run(action: Callable[[], _T]) -> _T:
    """Service errors become one `error:` line and exit code 1, never a traceback."""
    try:
        return action()
    except GalerneError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        typer.echo(f"error: {problems}", err=True)
        raise typer.Exit(code=2) from exc


def _print(value: BaseModel | list[Any], as_json: bool, text: Callable[[], str]) -> None:
    if as_json:
        data = [item.model_dump(mode="json") for item in value] if isinstance(value, list) else value.model_dump(
            mode="json"
        )
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(text())


def _limits(**given: Any) -> dict[str, Any]:
    models = given.pop("allowed_models")
    fields = {name: value for name, value in given.items() if value is not None}
    if models is not None:
        fields["allowed_models"] = [name.strip() for name in models.split(",") if name.strip()]
    return fields


@projects_app.command("create")
def create_project(
    name: str,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    concurrency: ConcurrencyOption = None,
    models: ModelsOption = None,
    monthly_tokens: TokenBudgetOption = None,
    monthly_budget: MoneyBudgetOption = None,
    expires: ExpiresOption = None,
    policy: PolicyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a project; limits left out are unlimited."""
    fields = _limits(
        requests_per_minute=rpm, tokens_per_minute=tpm, max_concurrent_requests=concurrency, allowed_models=models,
        monthly_token_budget=monthly_tokens, monthly_budget=monthly_budget, expires_at=expires, policy=policy,
    )
    with _accounts() as (accounts, _):
        project = _run(lambda: accounts.create_project(ProjectSpec(name=name, **fields)))
    _print(project, as_json, lambda: f"created project {project.name} ({project.id})")


@projects_app.command("update")
def update_project(
    name: str,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    concurrency: ConcurrencyOption = None,
    models: ModelsOption = None,
    monthly_tokens: TokenBudgetOption = None,
    monthly_budget: MoneyBudgetOption = None,
    expires: ExpiresOption = None,
    policy: PolicyOption = None,
    disable: Annotated[bool | None, typer.Option("--disable/--enable", help="Refuse or allow its keys.")] = None,
    unset: Annotated[
        list[str] | None,
        typer.Option(
            help="Lift a limit: rpm, tpm, concurrency, models, monthly-tokens, monthly-budget, expires, policy."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Change only the limits given; `--unset rpm` lifts one."""
    fields = _limits(
        requests_per_minute=rpm, tokens_per_minute=tpm, max_concurrent_requests=concurrency, allowed_models=models,
        monthly_token_budget=monthly_tokens, monthly_budget=monthly_budget, expires_at=expires, is_disabled=disable,
        policy=policy,
    )
    for flag in unset or []:
        if flag not in _UNSETTABLE:
            typer.echo(f"error: cannot unset {flag!r}; choose from {', '.join(_UNSETTABLE)}", err=True)
            raise typer.Exit(code=2)
        fields[_UNSETTABLE[flag]] = None
    with _accounts() as (accounts, _):
        project = _run(lambda: accounts.update_project(name, ProjectLimitsSpec(**fields)))
    _print(project, as_json, lambda: f"updated project {project.name}")


_UNSETTABLE = {
    "rpm": "requests_per_minute", "tpm": "tokens_per_minute", "concurrency": "max_concurrent_requests",
    "models": "allowed_models", "monthly-tokens": "monthly_token_budget", "monthly-budget": "monthly_budget",
    "expires": "expires_at", "policy": "policy",
}


@projects_app.command("list")
def list_projects(as_json: JsonOption = False) -> None:
    """Every project and its limits."""
    with _accounts() as (accounts, _):
        projects = _run(accounts.list_projects)
    rows = [
        {
            "name": p.name, "rpm": p.requests_per_minute, "tpm": p.tokens_per_minute,
            "concurrency": p.max_concurrent_requests, "models": ",".join(p.allowed_models or ["*"]),
            "monthly_tokens": p.monthly_token_budget, "monthly_budget": p.monthly_budget,
            "policy": p.policy or "", "disabled": p.is_disabled,
        }
        for p in projects
    ]
    _print(projects, as_json, lambda: as_table(rows) if rows else "no projects yet: galerne projects create NAME")


@keys_app.command("create")
def create_key(
    project: Annotated[str | None, typer.Option(help="Project name (admin keys default to `admin`).")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="May manage keys and read all usage.")] = False,
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "",
    expires: ExpiresOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print it once; only its hash is kept."""
    with _accounts() as (accounts, _):
        created = _run(lambda: accounts.create_key(project, name=name, is_admin=admin, expires_at=expires))
    _print(
        created,
        as_json,
        lambda: f"{created.key}\n(id {created.id}, project {created.project}{', admin' if created.is_admin else ''}; "
        "shown once: store it now)",
    )


@keys_app.command("list")
def list_keys(
    project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None, as_json: JsonOption = False
) -> None:
    """Keys by id (never their secrets)."""
    with _accounts() as (accounts, _):
        keys = _run(lambda: accounts.list_keys(project))
    rows = [
        {
            "id": k.id, "name": k.name, "project": k.project, "admin": k.is_admin,
            "created": k.created_at.isoformat(timespec="seconds"),
            "expires": k.expires_at.isoformat(timespec="seconds") if k.expires_at else None,
            "revoked": k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else None,
        }
        for k in keys
    ]
    _print(keys, as_json, lambda: as_table(rows) if rows else "no keys yet: galerne keys create --project NAME")


@keys_app.command("revoke")
def revoke_key(key_id: str, as_json: JsonOption = False) -> None:
    """Revoke a key by id; running servers refuse it within their key cache time."""
    with _accounts() as (accounts, _):
        key = _run(lambda: accounts.revoke_key(key_id))
    _print(key, as_json, lambda: f"revoked key {key.id}")


def usage(
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    key: Annotated[str | None, typer.Option(help="Only this key id.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model id.")] = None,
    since: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First day (UTC).")] = None,
    until: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Last day (UTC), inclusive.")] = None,
    by: Annotated[str, typer.Option(help="Group by: project, key, model, day (comma-separated).")] = "project,model",
    as_json: JsonOption = False,
    as_csv_output: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
) -> None:
    """Requests, tokens and cost, aggregated."""
    groups = [name.strip() for name in by.split(",") if name.strip()]
    with _accounts() as (_, database):
        rows = _run(
            lambda: UsageReports(database).aggregate(
                groups, project=project, key_id=key, model=model, since=_day(since), until=_day(until)
            )
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif as_csv_output:
        typer.echo(as_csv(rows), nl=False)
    else:
        typer.echo(as_table(rows))


def _day(moment: datetime | None) -> date | None:
    return moment.date() if moment is not None else None
