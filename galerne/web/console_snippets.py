"""Ready-to-paste snippets: how to call the API with a new key, and the `curl` equivalent of a playground
request. Made on the server, so the page shows exactly what was sent (and the copy button copies it).

Example::

    key_snippets("https://ai.example.org", "gal-3f9a0c1b2d4e.q9L...", "smollm2-135m-instruct")["curl"]
"""

from __future__ import annotations

import json
from typing import Any


def shell_quote(text: str) -> str:
    """`text` as one single-quoted shell word (a `'` inside becomes `'\\''`)."""
    return "'" + text.replace("'", "'\\''") + "'"


def curl_command(base_url: str, body: dict[str, Any], key: str = "$GALERNE_API_KEY") -> str:
    """A POST to /v1/chat/completions; the default key is an environment variable, never a secret."""
    authorization = f'"Authorization: Bearer {key}"'
    payload = json.dumps(body, ensure_ascii=False, indent=2)
    return (
        f"curl {base_url}/v1/chat/completions \\\n"
        f"  -H {authorization} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {shell_quote(payload)}"
    )


def key_snippets(base_url: str, key: str, model: str) -> dict[str, str]:
    """`curl` and Python (the official `openai` SDK) calls with a freshly created key."""
    body = {"model": model, "messages": [{"role": "user", "content": "Hello!"}]}
    python = (
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base_url}/v1", api_key="{key}")\n'
        "reply = client.chat.completions.create(\n"
        f'    model="{model}", messages=[{{"role": "user", "content": "Hello!"}}]\n'
        ")\n"
        "print(reply.choices[0].message.content)\n"
    )
    return {"curl": curl_command(base_url, body, key), "python": python}
