"""Process settings: built once by the CLI or `create_app` and passed down, never read at import."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from galerne.errors import ConfigurationError


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("galerne"))


class Settings(BaseSettings):
    """Everything an operator can set, from `GALERNE_*` environment variables or CLI flags.

    Example: ``GALERNE_HOME=/srv/galerne galerne serve --port 8000``.
    """

    model_config = SettingsConfigDict(env_prefix="GALERNE_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Directory holding all state.")
    config: Path | None = Field(default=None, description="Catalogue TOML; built-in defaults when unset.")
    models: str | None = Field(
        default=None, description="Without a catalogue file: comma-separated built-in models to serve "
        "(smollm2-135m-instruct, gemma3-270m); default: SmolLM2 and every built-in model whose weights are installed.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_file_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, description="Largest document upload.")
    max_queued_requests: int = Field(default=64, ge=1, description="Per model; more is refused with 429.")
    num_threads: int | None = Field(default=None, ge=1, description="llama.cpp threads; default: all cores.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file galerne.db in `home`. "
        "PostgreSQL: postgresql+psycopg://user:password@host/db",
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:6379/0 shares rate limits between replicas; in-process when unset."
    )
    no_auth: bool = Field(
        default=False, description="Serve without API keys; loopback only (`host`, and each connection, checked)."
    )
    workers: int = Field(default=1, ge=1, description="Server processes; >1 needs Redis and remote models only.")
    access_log: bool = Field(default=True, description="Log one line per HTTP request (never keys or bodies).")
    usage_flush_seconds: float = Field(default=0.5, gt=0, description="How often usage records are written.")
    usage_journal: bool = Field(
        default=True, description="Journal each usage record to `home`/usage-journal before the reply ends, so a "
        "killed process loses none; off: memory only, as for a data directory that does not outlive the process.",
    )
    usage_max_pending: int = Field(
        default=5000, ge=1, description="Usage records held in memory per process; with the journal, more wait on "
        "disk only; without it, new requests are refused (503) past this many unwritten records.",
    )
    usage_journal_max_bytes: int = Field(
        default=1 << 30, ge=4096, description="Unwritten usage records on disk per process (about 300 bytes "
        "each) past which new requests are refused with 503 until the database takes them.",
    )
    key_cache_seconds: float = Field(
        default=1.0, ge=0, description="How long a key lookup is trusted: a revocation or a limit change reaches "
        "every replica within this time (one small query per key and second).",
    )
    # Le Chat, the web app at /chat (docs/chat.md).
    web: bool = Field(default=True, description="Serve the chat web app at /chat.")
    signup: Literal["open", "invite", "closed"] = Field(
        default="invite", description="Who may create an account at /chat/signup: anyone, holders of an invite "
        "(`galerne users invite`), or nobody (the operator uses `galerne users create`).",
    )
    chat_projects: Literal["shared", "per-user"] = Field(
        default="shared", description="Meter and limit chat traffic under one shared project (`chat_project`), "
        "or under a project of its own created for each user at sign-up (with `chat_project`'s limits).",
    )
    chat_project: str = Field(
        default="chat", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
        description="The shared chat project's name (created unlimited on first use), or the template of the "
        "per-user projects' limits.",
    )
    session_idle_seconds: int = Field(default=7 * 24 * 3600, ge=10, description="A session unused this long ends.")
    session_max_seconds: int = Field(default=30 * 24 * 3600, ge=10, description="A session ends this long after login.")
    cookie_secure: Literal["auto", "always", "never"] = Field(
        default="auto", description="The session cookie's Secure flag: when the request came over https (`auto`, "
        "X-Forwarded-Proto from a trusted proxy counts), always, or never.",
    )
    chat_max_tokens: int | None = Field(
        default=None, ge=1, description="The most tokens one Le Chat reply may take (unset: what the model's context "
        "leaves); the user's Stop button ends one sooner.",
    )
    login_attempts_per_minute: int = Field(
        default=5, ge=1, description="Failed logins allowed per account and client address per minute; more are "
        "refused (429) until the bucket refills.",
    )

    def check_no_auth_is_local(self) -> None:
        """Refuse `no_auth` unless the server binds a loopback address: without keys, anyone who can
        reach it could use every model."""
        if self.no_auth and not is_loopback(self.host):
            raise ConfigurationError(
                f"--no-auth would let anyone who can reach {self.host} use every model; "
                "it is allowed on loopback addresses only (127.0.0.1, ::1, localhost)"
            )

    def as_environment(self) -> dict[str, str]:
        """These settings as `GALERNE_*` variables, for worker processes that build their own."""
        values = self.model_dump(exclude_none=True)
        return {f"GALERNE_{name.upper()}": str(value) for name, value in values.items()}

    @property
    def builtin_models(self) -> tuple[str, ...] | None:
        """`models` as a list of ids, or None for "every installed built-in model"."""
        if self.models is None:
            return None
        return tuple(name.strip() for name in self.models.split(",") if name.strip())

    def resolved_database_url(self) -> str:
        """The database to use: `database_url`, else a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.ensure_home() / 'galerne.db'}"

    def ensure_home(self) -> Path:
        """Create the data directory on first use so that a fresh machine needs no set-up step; private
        (0700), since it holds the database with every key hash and usage record."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.home


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv4-mapped IPv6 included) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
