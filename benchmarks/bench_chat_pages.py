"""Le Chat with a long history: page-load time and SQL query count, and time to the first streamed token
in the browser against the same request over the API.

    python benchmarks/bench_chat_pages.py                 # SQLite and PostgreSQL (127.0.0.1:5432), 1,000 x 50
    python benchmarks/bench_chat_pages.py --databases sqlite --repeats 10
    python benchmarks/bench_chat_pages.py --no-browser    # pages only

Stage 1, for each database: a user holding 1,000 conversations and 50,000 messages (bulk-inserted), a real
`galerne serve` on that database, and a client logged in through the real login form. It measures
`GET /chat/c/<id>` (a conversation of 50 messages, with the sidebar) and `GET /chat` end to end over HTTP
(median and p95 of `--repeats` loads), and counts the SQL statements each page's data takes in-process
(SQLAlchemy's `before_cursor_execute`), the number the tests assert.

Stage 2 (SQLite server): time to first token. In headless Chromium, from the Enter key to the first
character of the answer on screen; over the API, from sending `POST /v1/chat/completions` (stream, the same
messages, the same `max_tokens`) to the first content chunk. Both go through the same ChatService, so the
difference is what the web path adds (its database writes, the HTML rendering, the browser).

Timings on a shared 2-core machine vary with whatever else runs; read ratios, and rerun when busy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from galerne.catalog import default_catalog
from galerne.services.conversations import ConversationService
from galerne.storage.database import Database
from tests.conftest import create_key, run_cli, start_server, stop_server
from tests.databases import fresh_database_url
from tests.services.chat_history import add_history
from tests.services.test_conversation_queries import counted
from tests.web.conftest import CHROMIUM, WebUserAccount, http_login

PASSWORD = "correct horse battery"
PROMPT = "What is the capital of France? Answer in one sentence."


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _time_page(client: httpx.Client, path: str, repeats: int) -> dict[str, float]:
    client.get(path)  # warm
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    return {"median_ms": statistics.median(times), "p95_ms": _percentile(times, 0.95)}


@contextmanager
def _server(home: Path, database_url: str, max_tokens: int) -> Iterator[Any]:
    env = {"GALERNE_DATABASE_URL": database_url, "GALERNE_CHAT_MAX_TOKENS": str(max_tokens),
           "GALERNE_ACCESS_LOG": "false"}
    server = start_server(home, env=env)
    try:
        yield server
    finally:
        stop_server(server)


def _user(server: Any, email: str) -> WebUserAccount:
    made = run_cli(server.home, "users", "create", email, "--password", PASSWORD, env=server.env)
    return WebUserAccount(email=made["email"], password=PASSWORD, id=made["id"], project=made["project"])


def stage_pages(kind: str, repeats: int, num_conversations: int, messages_each: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder, fresh_database_url(kind, Path(folder)) as url:
        home = Path(folder) / "home"
        home.mkdir()
        with _server(home, url, 16) as server:
            account = _user(server, f"bench-{kind}@example.org")
            database = Database.open(url)
            started = time.perf_counter()
            ids = add_history(database, account.id, num_conversations=num_conversations, messages_each=messages_each)
            insert_s = time.perf_counter() - started
            service = ConversationService(database, default_catalog())
            asyncio.run(service.page(account.id, ids[0]))
            with counted(database) as statements:
                asyncio.run(service.page(account.id, ids[len(ids) // 2]))
            num_page_queries = len(statements)
            with counted(database) as statements:
                asyncio.run(service.search(account.id, "topic5"))
            num_search_queries = len(statements)
            database.close()
            with http_login(server, account) as client:
                conversation = _time_page(client, f"/chat/c/{ids[len(ids) // 2]}", repeats)
                new_chat = _time_page(client, "/chat", repeats)
                search = _time_page(client, "/chat/search?q=topic5", repeats)
        return {"database": kind, "conversations": num_conversations, "messages": num_conversations * messages_each,
                "bulk_insert_s": round(insert_s, 1), "queries_conversation_page": num_page_queries,
                "queries_search": num_search_queries, "GET /chat/c/<id>": conversation, "GET /chat": new_chat,
                "GET /chat/search": search}


def stage_first_token(repeats: int, max_tokens: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        url = f"sqlite:///{home / 'galerne.db'}"
        with _server(home, url, max_tokens) as server:
            account = _user(server, "ttft@example.org")
            key = create_key(home, project="bench-api", env=server.env)
            api_times = []
            body = {"model": "smollm2", "stream": True, "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": PROMPT}]}
            for _ in range(repeats):
                started = time.perf_counter()
                with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120,
                                  headers={"Authorization": f"Bearer {key}"}) as response:
                    for line in response.iter_lines():
                        if line.startswith("data: {"):
                            delta = json.loads(line[6:])["choices"][0]["delta"]
                            if delta.get("content"):
                                api_times.append((time.perf_counter() - started) * 1000)
                                break
            browser_times = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page()
                page.goto(f"{server.base_url}/chat/login")
                page.fill("#email", account.email)
                page.fill("#password", PASSWORD)
                page.press("#password", "Enter")
                page.wait_for_url(f"{server.base_url}/chat")
                for _ in range(repeats):
                    page.goto(f"{server.base_url}/chat")
                    page.fill("#prompt", PROMPT)
                    elapsed = page.evaluate(
                        """() => new Promise((resolve) => {
                            const started = performance.now();
                            new MutationObserver((_, observer) => {
                              const body = document.querySelector('li.message.assistant .message-body');
                              if (body && body.textContent.trim()) { observer.disconnect();
                                resolve(performance.now() - started); }
                            }).observe(document.getElementById('messages'),
                                       {subtree: true, childList: true, characterData: true});
                            document.getElementById('prompt').dispatchEvent(
                              new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));
                          })"""
                    )
                    browser_times.append(float(elapsed))
                    page.wait_for_selector("li.message.assistant .meta", timeout=120_000)
                browser.close()
    return {
        "api_ttft_ms": {"median": statistics.median(api_times), "runs": [round(t) for t in api_times]},
        "browser_ttft_ms": {"median": statistics.median(browser_times), "runs": [round(t) for t in browser_times]},
        "browser_over_api": statistics.median(browser_times) / statistics.median(api_times),
        "note": "the browser figure includes creating the conversation (first message of a new chat)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--messages-each", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"pages": []}
    for kind in args.databases.split(","):
        result = stage_pages(kind, args.repeats, args.conversations, args.messages_each)
        print(json.dumps(result, indent=2), flush=True)
        results["pages"].append(result)
    if not args.no_browser:
        results["first_token"] = stage_first_token(max(3, args.repeats // 4), args.max_tokens)
        print(json.dumps(results["first_token"], indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
