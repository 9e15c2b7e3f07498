"""The console's copy-paste snippets: the `curl` command a shell runs sends exactly the playground's body,
quotes and all, and the key's snippets carry the key and the server's address."""

from __future__ import annotations

import json
import shlex

from galerne.web.console_snippets import curl_command, key_snippets


def test_the_curl_command_sends_the_body_unchanged_through_a_shell() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "it's \"quoted\" $HOME `x` \\ é"}],
            "max_tokens": 5}
    words = shlex.split(curl_command("http://127.0.0.1:8000", body))  # as POSIX sh would split it
    assert words[:2] == ["curl", "http://127.0.0.1:8000/v1/chat/completions"]
    assert json.loads(words[words.index("-d") + 1]) == body
    assert words[words.index("-H") + 1] == "Authorization: Bearer $GALERNE_API_KEY"  # expanded by the shell


def test_the_key_snippets_use_the_key_and_the_servers_address() -> None:
    snippets = key_snippets("https://ai.example.org", "gal-0123456789ab.secret", "smollm2")
    assert "Bearer gal-0123456789ab.secret" in snippets["curl"]
    assert 'OpenAI(base_url="https://ai.example.org/v1", api_key="gal-0123456789ab.secret")' in snippets["python"]
    compile(snippets["python"], "snippet.py", "exec")  # valid Python
