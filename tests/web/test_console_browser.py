"""The console in a real headless Chromium against one real `galerne serve` for the module: an operator
creates a project and a key, the key answers real chat completions at once, their usage reaches the chart's
JSON and the page, a limit set in the page refuses the next call (and the refusal is counted), revoking makes
the next call a 401, and the audit trail shows it all; a member sees only their project, gets 404 for
another's key or usage by id and no audit trail; screenshots of the keys, usage and models pages in English
and French."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import RunningServer, run_cli
from tests.web.conftest import PASSWORD, WebUserAccount, create_user, csrf_of, http_login, screenshot

CHAT_MODEL = "smollm2-135m-instruct"


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{os.urandom(3).hex()}"


def _log_in(page: Any, server: RunningServer, account: WebUserAccount, target: str) -> None:
    page.goto(f"{server.base_url}/chat/login?next={target}")
    page.fill("#email", account.email)
    page.fill("#password", account.password)
    page.press("#password", "Enter")
    page.wait_for_url(re.compile(re.escape(f"{server.base_url}{target}")))


def _chat(server: RunningServer, key: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
        json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 6},
    )


def _usage_when(page: Any, url: str, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The usage JSON (fetched with the page's session) once `ready` holds: records are written in batches."""
    deadline = time.monotonic() + 20
    while True:
        usage: dict[str, Any] = page.request.get(url).json()
        if ready(usage) or time.monotonic() > deadline:
            return usage
        time.sleep(0.3)


def test_an_operator_manages_a_project_and_its_key_end_to_end(
    web_server: RunningServer, new_context: Callable[..., Any]
) -> None:
    operator = create_user(web_server, f"{_unique('operator')}@example.org", PASSWORD, "--admin")
    project = _unique("acme")
    page = new_context().new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the revoke confirmation
    _log_in(page, web_server, operator, "/console/projects")

    page.fill("#project-name", project)
    page.get_by_role("button", name="Create the project", exact=True).click()
    page.wait_for_url(re.compile(rf".*/console/projects\?project={project}$"))
    page.get_by_role("link", name="API keys", exact=True).click()
    page.fill("#key-name", "integration")
    page.get_by_role("button", name="Create a key", exact=True).click()
    key = page.get_by_test_id("new-key").inner_text().strip()
    assert re.fullmatch(r"gal-[0-9a-f]{12}\.[A-Za-z0-9_-]+", key)
    key_id = key[4:16]
    assert key in page.get_by_test_id("snippet-curl").inner_text()
    screenshot(page, "console-keys-en")

    answers = [_chat(web_server, key) for _ in range(2)]  # at once: no wait, no restart
    assert [answer.status_code for answer in answers] == [200, 200], answers[0].text
    used = sum(answer.json()["usage"]["total_tokens"] for answer in answers)
    page.reload()  # a reload shows the key without its secret, and when it was last used
    assert page.get_by_test_id("created-key").count() == 0 and key not in page.content()
    page.get_by_role("link", name="Usage", exact=True).click()
    page.wait_for_url(re.compile(r".*/console/usage\?project=.*"))
    project_id = page.locator("#usage-charts").get_attribute("data-url").split("project=")[1].split("&")[0]
    usage = _usage_when(page, f"{web_server.base_url}/console/api/usage?project={project_id}",
                        lambda found: found["totals"]["total_tokens"] >= used)
    assert usage["totals"] == {**usage["totals"], "num_requests": 2, "total_tokens": used}
    assert [row["key_id"] for row in usage["top_keys"]] == [key_id]
    listed = page.request.get(f"{web_server.base_url}/console/api/keys/{key_id}").json()
    assert listed["last_used_at"] is not None and "key" not in listed  # when it was used, never the secret
    assert {row["model"] for row in usage["by_day"]} == {CHAT_MODEL}
    page.reload()
    assert page.get_by_test_id("total-tokens").inner_text() == f"{used:,}"
    page.wait_for_selector("#usage-charts[data-loaded='true']")
    assert page.locator("#chart-tokens").bounding_box()["height"] > 100  # Chart.js drew into it
    csv = page.request.get(f"{web_server.base_url}/console/api/usage.csv?project={project_id}").text()
    assert csv.splitlines()[0].startswith("day,model,") and CHAT_MODEL in csv
    screenshot(page, "console-usage-en")

    page.get_by_role("link", name="Projects and limits", exact=True).click()  # one request a minute, from now on
    page.fill("#requests_per_minute", "1")
    page.get_by_role("button", name="Save the limits", exact=True).click()
    page.get_by_test_id("saved").wait_for()
    screenshot(page, "console-projects-en")
    statuses = [_chat(web_server, key).status_code for _ in range(2)]
    assert statuses == [200, 429]
    usage = _usage_when(page, f"{web_server.base_url}/console/api/usage?project={project_id}",
                        lambda found: bool(found["refusals"]))
    assert usage["refusals"] == {"requests_per_minute": 1}

    page.get_by_role("link", name="API keys", exact=True).click()
    page.get_by_test_id(f"revoke-{key_id}").click()
    page.get_by_test_id("revoked").wait_for()
    refused = _chat(web_server, key)
    assert refused.status_code == 401 and "revoked" in refused.json()["message"]

    page.get_by_test_id("audit-link").click()
    page.wait_for_url(re.compile(r".*/console/audit$"))
    rows = page.get_by_test_id("audit").locator("tbody tr")
    rows.first.wait_for()  # all_inner_texts does not wait: read the table once it is there
    mine = [text for text in rows.all_inner_texts() if operator.email in text]
    assert [line.split("\t")[2] for line in mine[:4]] == [
        "revoked a key", "changed limits", "created a key", "created a project"
    ], mine
    assert key not in page.content()

    french = new_context(locale="fr-FR").new_page()
    _log_in(french, web_server, operator, f"/console/usage?project={project}")
    french.wait_for_selector("#usage-charts[data-loaded='true']")
    assert french.get_by_role("heading", level=1).inner_text().startswith("Consommation")
    screenshot(french, "console-usage-fr")
    french.goto(f"{web_server.base_url}/console/keys?project={project}")
    screenshot(french, "console-keys-fr")


def test_the_models_page_and_its_playground_in_two_languages(
    web_server: RunningServer, new_context: Callable[..., Any]
) -> None:
    operator = create_user(web_server, f"{_unique('playground')}@example.org", PASSWORD, "--admin")
    page = new_context().new_page()
    _log_in(page, web_server, operator, "/console/models?project=tests")
    listed = {card["id"]: card for card in web_server.get("/v1/models").json()["data"]}
    card = page.locator(f".model-card[data-model='{CHAT_MODEL}']").inner_text()
    assert f"{listed[CHAT_MODEL]['max_context_length']:,}" in card and "chat" in card
    assert page.locator(".model-card").count() == len(listed)
    page.fill("#pg-max-tokens", "24")
    page.fill("#pg-schema", '{"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}')
    page.get_by_test_id("playground-send").click()
    page.wait_for_selector("#playground-form[data-status]")
    assert page.locator("#playground-form").get_attribute("data-status") == "200"
    raw = json.loads(page.get_by_test_id("playground-response").inner_text())
    assert raw["object"] == "chat.completion" and raw["usage"]["completion_tokens"] > 0
    assert isinstance(json.loads(raw["choices"][0]["message"]["content"])["ok"], bool)  # the schema held
    curl = page.get_by_test_id("playground-curl").inner_text()
    assert curl.startswith(f"curl {web_server.base_url}/v1/chat/completions") and '"max_tokens": 24' in curl
    assert '"schema": {' in curl  # the wire's field names, as the API takes them
    assert "$GALERNE_API_KEY" in curl  # never a real secret
    page.evaluate("window.scrollTo(0, 0)")  # the sticky top bar at the top of the full-page picture
    screenshot(page, "console-models-en")

    french = new_context(locale="fr-FR").new_page()
    _log_in(french, web_server, operator, "/console/models?project=tests")
    assert french.get_by_role("heading", name="Bac à sable").count() == 1
    screenshot(french, "console-models-fr")


def test_a_member_sees_only_their_project(web_server: RunningServer, new_context: Callable[..., Any]) -> None:
    home, env = web_server.home, web_server.env
    ours, theirs = _unique("ours"), "tests"  # theirs: the server's own test project, with its key
    ids = {ours: run_cli(home, "projects", "create", ours, env=env)["id"]}
    ids.update({project["name"]: project["id"] for project in run_cli(home, "projects", "list", env=env)})
    our_key = run_cli(home, "keys", "create", "--project", ours, env=env)["id"]
    their_key = web_server.api_key[4:16]
    member = create_user(web_server, f"{_unique('member')}@example.org")
    run_cli(home, "users", "grant", member.email, "--project", ours, env=env)

    page = new_context().new_page()
    _log_in(page, web_server, member, "/console/keys")
    options = page.get_by_test_id("project-select").locator("option").all_inner_texts()
    assert options == [ours]
    assert page.get_by_test_id("audit-link").count() == 0
    page.goto(f"{web_server.base_url}/console/keys?project={theirs}")
    assert page.get_by_test_id("error").count() == 1

    with http_login(web_server, member) as client:
        token = csrf_of(client.get("/console/keys").text)
        assert [p["name"] for p in client.get("/console/api/projects").json()["data"]] == [ours]
        assert client.get(f"/console/api/keys/{our_key}").status_code == 200
        for path in (f"/console/api/keys/{their_key}", f"/console/api/usage?project={ids[theirs]}",
                     f"/console/api/usage?project={theirs}", f"/console/api/usage?project={ours}&key={their_key}",
                     f"/console/api/usage.csv?project={ids[theirs]}", f"/console/keys?project={ids[theirs]}"):
            assert client.get(path).status_code == 404, path
        revoke = client.post(f"/console/keys/{their_key}/revoke", data={"csrf_token": token})
        assert revoke.status_code == 404
        assert client.get("/console/audit").status_code == 403
        # State-changing requests without the session's CSRF token are refused, whoever sends them.
        assert client.post("/console/keys", data={"project": ours, "name": "x"}).status_code == 403
        assert client.post(f"/console/keys/{our_key}/revoke").status_code == 403
        playground = {"project": ours, "request": {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "x"}]}}
        assert client.post("/console/api/playground", json=playground).status_code == 403
        forged = {"X-CSRF-Token": "forged-token-123456789"}
        assert client.post("/console/api/playground", json=playground, headers=forged).status_code == 403
        elsewhere = {**playground, "project": ids[theirs]}  # with the token, but another project's playground
        with_token = {"X-CSRF-Token": token}
        assert client.post("/console/api/playground", json=elsewhere, headers=with_token).status_code == 404
        invalid = {**playground, "request": {"model": CHAT_MODEL, "messages": [], "max_tokens": "5"}}
        refused = client.post("/console/api/playground", json=invalid, headers=with_token)
        assert refused.status_code == 422 and refused.json()["param"] == "messages", refused.text
        assert client.get(f"/console/api/keys/{our_key}").json()["revoked_at"] is None  # nothing happened
    with httpx.Client(base_url=web_server.base_url, timeout=30) as anonymous:
        assert anonymous.get("/console/api/projects").status_code == 401
        assert anonymous.get("/console/keys", follow_redirects=False).headers["location"].startswith("/chat/login")
