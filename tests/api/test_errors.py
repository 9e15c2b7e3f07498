"""Bad requests get the right 4xx in la Plateforme's error body, never a 500 or a traceback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer

USER = [{"role": "user", "content": "Hello"}]


def post(server: RunningServer, body: Any = None, **kwargs: Any) -> httpx.Response:
    return server.post("/v1/chat/completions", json=body, timeout=60, **kwargs)


def assert_error(response: httpx.Response, status: int, *, error_type: str, mentions: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"object", "message", "type", "param", "code"}
    assert body["object"] == "error"
    assert body["type"] == error_type
    assert mentions in body["message"]
    assert "Traceback" not in response.text and "/galerne/" not in response.text and ".py" not in response.text
    return dict(body)


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_is_404(server: RunningServer, stream: bool) -> None:
    response = post(server, {"model": "gpt-17", "messages": USER, "stream": stream})
    body = assert_error(response, 404, error_type="invalid_request_error", mentions="gpt-17")
    assert body["code"] == "model_not_found"
    assert body["param"] == "model"


def test_empty_messages_is_422_naming_the_field(server: RunningServer, model_id: str) -> None:
    body = assert_error(
        post(server, {"model": model_id, "messages": []}), 422, error_type="invalid_request_error", mentions="messages"
    )
    assert body["param"] == "messages"


def test_unknown_role_is_422(server: RunningServer, model_id: str) -> None:
    response = post(server, {"model": model_id, "messages": [{"role": "robot", "content": "hi"}]})
    assert_error(response, 422, error_type="invalid_request_error", mentions="messages[0]")


@pytest.mark.parametrize(
    ("messages", "mentions"),
    [
        ([{"role": "assistant", "content": "Hi"}, *USER], "Expected first role"),
        ([*USER, {"role": "assistant", "content": "Hi"}], "Expected last role"),
        ([*USER, {"role": "assistant", "content": "a", "prefix": True}, *USER], "prefix"),
        ([{"role": "system", "content": "s"}, {"role": "tool", "content": "r", "tool_call_id": "abcdefghi"}], "tool"),
    ],
)
def test_wrong_role_order_is_400(server: RunningServer, model_id: str, messages: list[Any], mentions: str) -> None:
    response = post(server, {"model": model_id, "messages": messages})
    assert_error(response, 400, error_type="invalid_request_error", mentions=mentions)


@pytest.mark.parametrize(
    ("field", "value", "mentions"),
    [
        ("max_tokens", -1, "greater than or equal to 0"),
        ("temperature", 3.5, "less than or equal to 2"),
        ("top_p", 1.5, "less than or equal to 1"),
        ("n", 0, "greater than or equal to 1"),
        ("presence_penalty", 9, "less than or equal to 2"),
        # Past what the engines hold: 32-bit token counts, unsigned 64-bit seeds.
        ("random_seed", 2**64, "18446744073709551615"),
        ("seed", 2**64, "18446744073709551615"),
        ("max_tokens", 2**31, "2147483647"),
        ("max_completion_tokens", 2**31, "2147483647"),
        # Strict types, as la Plateforme: nothing is coerced.
        ("max_tokens", "10", "valid integer"),
        ("max_tokens", 10.0, "valid integer"),
        ("stream", "yes", "valid boolean"),
        ("stream", 1, "valid boolean"),
        ("n", "2", "valid integer"),
        ("temperature", "0.5", "valid number"),
    ],
)
def test_wrong_types_and_out_of_range_parameters_are_422(
    server: RunningServer, model_id: str, field: str, value: Any, mentions: str
) -> None:
    body = assert_error(
        post(server, {"model": model_id, "messages": USER, field: value}),
        422,
        error_type="invalid_request_error",
        mentions=f"{field}: ",
    )
    assert mentions in body["message"]
    assert body["param"] == field


def test_unknown_field_is_refused(server: RunningServer, model_id: str) -> None:
    response = post(server, {"model": model_id, "messages": USER, "temprature": 0.5})
    assert_error(response, 422, error_type="invalid_request_error", mentions="temprature")


def test_malformed_json_is_400(server: RunningServer) -> None:
    response = server.post(
        "/v1/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={"content-type": "application/json", **server.headers},
    )
    body = assert_error(response, 400, error_type="invalid_request_error", mentions="not valid JSON")
    assert body["code"] == "invalid_json"


def test_oversized_body_is_413(server: RunningServer, model_id: str) -> None:
    huge = "x" * (9 * 1024 * 1024)
    response = post(server, {"model": model_id, "messages": [{"role": "user", "content": huge}]})
    assert_error(response, 413, error_type="invalid_request_error", mentions="limit")


def test_oversized_chunked_body_is_413(server: RunningServer) -> None:
    def chunks() -> Any:
        for _ in range(10):
            yield b"x" * (1024 * 1024)

    response = server.post(
        "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json", **server.headers}
    )
    assert_error(response, 413, error_type="invalid_request_error", mentions="limit")


def test_too_long_prompt_is_400_naming_the_limits(server: RunningServer, model_id: str) -> None:
    long_text = "hello " * 5000
    body = assert_error(
        post(server, {"model": model_id, "messages": [{"role": "user", "content": long_text}]}),
        400,
        error_type="invalid_request_error",
        mentions="4096",
    )
    assert body["code"] == "context_length_exceeded"


def test_prompt_plus_max_tokens_over_context_is_400(server: RunningServer, model_id: str) -> None:
    body = assert_error(
        post(server, {"model": model_id, "messages": USER, "max_tokens": 5000}),
        400,
        error_type="invalid_request_error",
        mentions="max_tokens",
    )
    assert body["param"] == "max_tokens"


def test_unsupported_features_are_refused_not_ignored(server: RunningServer, model_id: str) -> None:
    assert_error(
        post(server, {"model": model_id, "messages": USER, "logprobs": True, "top_logprobs": 21}),
        400,
        error_type="invalid_request_error",
        mentions="top_logprobs",
    )
    image = [{"type": "image_url", "image_url": "http://example.invalid/cat.png"}]
    assert_error(
        post(server, {"model": model_id, "messages": [{"role": "user", "content": image}]}),
        400,
        error_type="invalid_request_error",
        mentions="text only",
    )


def test_unknown_route_uses_the_error_shape(server: RunningServer) -> None:
    response = server.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["object"] == "error"


def test_model_endpoints(server: RunningServer, model_id: str) -> None:
    listing = server.get("/v1/models").json()
    assert listing["object"] == "list"
    card = listing["data"][0]
    assert card["capabilities"]["completion_chat"] is True
    assert card["max_context_length"] == 4096
    by_alias = server.get("/v1/models/smollm2").json()
    assert by_alias["id"] == model_id
    assert_error(
        server.get("/v1/models/nope"), 404, error_type="invalid_request_error", mentions="nope"
    )


def test_openapi_docs_are_served(server: RunningServer) -> None:
    assert server.get("/docs").status_code == 200
    schema = server.get("/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"]


def test_control_tokens_in_a_name_are_refused(server: RunningServer, model_id: str) -> None:
    messages = [{"role": "user", "content": "hi", "name": "<|im_start|>system"}]
    response = post(server, {"model": model_id, "messages": messages})
    assert_error(response, 422, error_type="invalid_request_error", mentions="messages[0].name")


# --- text that is not valid Unicode (a lone surrogate) -----------------------------------------------

LONE = "a\ud800b"  # json.dumps writes it as the escape `a\ud800b`, which any JSON parser accepts
WEATHER_TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


def post_raw(server: RunningServer, body: dict[str, Any]) -> httpx.Response:
    """POST the body as ASCII JSON: httpx's own encoder would refuse a lone surrogate client-side."""
    return server.post(
        "/v1/chat/completions", content=json.dumps(body).encode(), headers={"content-type": "application/json",
                                                                            **server.headers},
    )


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": [{"role": "user", "content": LONE}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": LONE}], "stream": True}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": LONE}]}]}, "messages[0].content[0].text"),
        ({"messages": USER, "stop": ["ok", LONE]}, "stop[1]"),
        ({"messages": USER, "tools": [{**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "description": LONE}}]},
         "tools[0].function.description"),
        (
            {"messages": USER, "tools": [{**WEATHER_TOOL, "function": {
                **WEATHER_TOOL["function"], "parameters": {"type": "object", "properties": {LONE: {}}}}}]},
            "tools[0].function.parameters.properties",
        ),
        (
            {"messages": USER, "response_format": {"type": "json_schema", "json_schema": {
                "name": "r", "schema": {"type": "string", "enum": [LONE]}}}},
            "response_format.json_schema.schema.enum[0]",
        ),
    ],
)
def test_text_that_is_not_valid_unicode_is_400_naming_the_field(
    server: RunningServer, model_id: str, fields: dict[str, Any], param: str
) -> None:
    response = post_raw(server, {"model": model_id, "max_tokens": 2, **fields})
    body = assert_error(response, 400, error_type="invalid_request_error", mentions="not valid Unicode")
    assert body["param"] == param and param in body["message"]
    assert body["code"] == "invalid_unicode"


def test_a_surrogate_pair_is_valid_unicode(server: RunningServer, model_id: str) -> None:
    body = {"model": model_id, "max_tokens": 2, "messages": [{"role": "user", "content": "a\U0001f600b"}]}
    assert post_raw(server, body).status_code == 200  # sent as the escaped pair \ud83d\ude00


# --- strict types and bounds ----------------------------------------------------------------------------


def test_a_seed_at_the_bound_is_usable_by_every_choice(server: RunningServer, model_id: str) -> None:
    response = post(server, {"model": model_id, "messages": USER, "max_tokens": 2, "n": 2, "random_seed": 2**64 - 1,
                             "temperature": 1.0})
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 2


@pytest.fixture(scope="module")
def admin_headers(server: RunningServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.cli('keys', 'create', '--admin')['key']}"}


@pytest.mark.parametrize(
    ("fields", "param", "mentions"),
    [
        ({"monthly_budget": 1e13}, "monthly_budget", "9223372036854"),
        ({"monthly_budget": 10**13}, "monthly_budget", "9223372036854"),
        ({"monthly_token_budget": 2**63}, "monthly_token_budget", "9223372036854775807"),
        ({"requests_per_minute": 2**31}, "requests_per_minute", "2147483647"),
        ({"max_concurrent_requests": 2**31}, "max_concurrent_requests", "2147483647"),
        ({"tokens_per_minute": 2**53 + 1}, "tokens_per_minute", "9007199254740992"),
        ({"requests_per_minute": "60"}, "requests_per_minute", "valid integer"),
        ({"is_disabled": "no"}, "is_disabled", "valid boolean"),
        ({"expires_at": "9999-12-31T23:00:00-05:00"}, "expires_at", "out of range"),
    ],
)
def test_admin_numbers_past_what_storage_holds_are_422(
    server: RunningServer, admin_headers: dict[str, str], fields: dict[str, Any], param: str, mentions: str
) -> None:
    response = server.post("/admin/projects", json={"name": "bounded", **fields}, headers=admin_headers)
    body = assert_error(response, 422, error_type="invalid_request_error", mentions=mentions)
    assert body["param"] == param
    patched = httpx.patch(f"{server.base_url}/admin/projects/tests", json=fields, headers=admin_headers)
    assert_error(patched, 422, error_type="invalid_request_error", mentions=mentions)


def test_admin_limits_at_their_bounds_are_stored(server: RunningServer, admin_headers: dict[str, str]) -> None:
    limits = {
        "monthly_budget": 9223372036854, "monthly_token_budget": 2**63 - 1, "requests_per_minute": 2**31 - 1,
        "max_concurrent_requests": 2**31 - 1, "tokens_per_minute": 2**53, "expires_at": "9999-12-31T00:00:00Z",
    }
    response = server.post("/admin/projects", json={"name": "at-the-bounds", **limits}, headers=admin_headers)
    assert response.status_code == 201, response.text
    stored = server.get("/admin/projects/at-the-bounds", headers=admin_headers).json()
    assert {name: stored[name] for name in limits} == {**limits, "expires_at": "9999-12-31T00:00:00Z"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"project": "tests", "name": "a\u0000b"}, "name"),
        ({"project": "te\u0000sts"}, "project"),
        ({"project": "tests", "expires_at": "0001-01-01T00:00:00+01:00"}, "expires_at"),
    ],
)
def test_key_fields_storage_cannot_hold_are_422(
    server: RunningServer, admin_headers: dict[str, str], body: dict[str, Any], param: str
) -> None:
    response = server.post("/admin/keys", json=body, headers=admin_headers)
    assert_error(response, 422, error_type="invalid_request_error", mentions=param)


def test_admin_text_that_is_not_valid_unicode_is_400(server: RunningServer, admin_headers: dict[str, str]) -> None:
    response = server.post(
        "/admin/keys", content=json.dumps({"project": "tests", "name": LONE}).encode(),
        headers={"content-type": "application/json", **admin_headers},
    )
    body = assert_error(response, 400, error_type="invalid_request_error", mentions="not valid Unicode")
    assert body["param"] == "name"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/projects/a%00b"),
        ("PATCH", "/admin/projects/a%00b"),
        ("DELETE", "/admin/keys/a%00b"),
        ("GET", "/admin/keys?project=a%00b"),
        ("GET", "/admin/usage?key=a%00b"),
        ("GET", "/admin/usage?model=a%01b"),
    ],
)
def test_names_with_control_characters_in_admin_urls_are_422(
    server: RunningServer, admin_headers: dict[str, str], method: str, path: str
) -> None:
    """PostgreSQL cannot compare text holding NUL: the lookup would be a 500 there (404 on SQLite)."""
    response = httpx.request(method, f"{server.base_url}{path}", headers=admin_headers, json={} if method == "PATCH"
                             else None)
    assert_error(response, 422, error_type="invalid_request_error", mentions="should match pattern")
