"""The `galerne` command: `serve` runs the API; `models` lists the catalogue.

Example: ``galerne serve --port 8000`` then ``curl localhost:8000/v1/models``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from galerne.catalog import Catalog, load_catalog
from galerne.config import Settings
from galerne.errors import ConfigurationError

app = typer.Typer(help="Galerne: self-hosted models as a service.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Catalogue TOML (default: GALERNE_CONFIG, else the bundled model).")
]


def _settings(**overrides: object) -> Settings:
    """Settings from the environment, with the CLI flags that were given taking precedence."""
    return Settings.model_validate({key: value for key, value in overrides.items() if value is not None})


def _checked_catalog(settings: Settings) -> Catalog:
    """Load the catalogue and check every model file now, so mistakes stop start-up with a clear line."""
    try:
        catalog = load_catalog(settings.config)
        for entry in catalog.models:
            entry.gguf_path()
    except ConfigurationError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=2) from exc
    return catalog


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the API (and load every model of the catalogue)."""
    settings = _settings(host=host, port=port, config=config)
    settings.ensure_home()
    catalog = _checked_catalog(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from galerne.api.app import create_app  # imported late: `galerne models` should not load FastAPI

    typer.echo(f"Galerne serving {', '.join(e.id for e in catalog.models)} on http://{settings.host}:{settings.port}")
    uvicorn.run(create_app(settings, catalog), host=settings.host, port=settings.port, log_level="info")


@app.command("models")
def list_models(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List the catalogue (the default model first)."""
    catalog = _checked_catalog(_settings(config=config))
    entries = catalog.ordered()
    if as_json:
        typer.echo(json.dumps([entry.model_dump(mode="json") for entry in entries], indent=2))
        return
    for entry in entries:
        aliases = f" (aliases: {', '.join(entry.aliases)})" if entry.aliases else ""
        typer.echo(f"{entry.id}{aliases}  context={entry.context_length}  slots={entry.num_slots}")
