"""Process settings: built once by the CLI or `create_app` and passed down, never read at import."""

from __future__ import annotations

from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("galerne"))


class Settings(BaseSettings):
    """Everything an operator can set, from `GALERNE_*` environment variables or CLI flags.

    Example: ``GALERNE_HOME=/srv/galerne galerne serve --port 8000``.
    """

    model_config = SettingsConfigDict(env_prefix="GALERNE_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Directory holding all state.")
    config: Path | None = Field(default=None, description="Catalogue TOML; built-in defaults when unset.")
    host: str = "127.0.0.1"
    port: int = 8000
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_queued_requests: int = Field(default=64, ge=1, description="Per model; more is refused with 429.")
    num_threads: int | None = Field(default=None, ge=1, description="llama.cpp threads; default: all cores.")

    def ensure_home(self) -> Path:
        """Create the data directory on first use so that a fresh machine needs no set-up step."""
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home
