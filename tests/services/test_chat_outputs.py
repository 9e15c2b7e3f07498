"""How `ChatService` turns the engine's typed outputs into replies, with a small scripted engine.

The scripted engine stands in for the layer below only; the same paths run on the real model over HTTP
in `tests/structured/test_guarantees.py`. Here the events are chosen exactly: a reply the engine
withheld as invalid (which the real grammar never lets happen, so only a script can produce it), typed
tool calls, and call text that must never become content.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from galerne.catalog import default_catalog
from galerne.engines.base import EngineCapabilities, EngineStats
from galerne.errors import UnsupportedFeatureError
from galerne.inference.types import FinishReason, GenerationEvent, GenerationRequest, ToolCall
from galerne.protocol import chat as wire
from galerne.protocol.completions import CompletionRequest, FimCompletionRequest
from galerne.services.admission import Admission
from galerne.services.auth import Principal
from galerne.services.chat import ChatService, GenerationFailedError
from galerne.services.completions import CompletionService
from galerne.services.limits import InProcessLimiter
from galerne.services.metering import UsageMeter
from galerne.services.metrics import Metrics
from galerne.services.models import ModelRegistry
from galerne.storage.database import Database

CALL = ToolCall("abcDEF123", "get_weather", '{"city": "Rome"}')


@dataclass(frozen=True)
class _Prepared:
    prompt_tokens: int = 5
    max_new_tokens: int = 10
    num_choices: int = 1


class _Generation:
    def __init__(self, events: list[GenerationEvent]) -> None:
        self.prompt_tokens = 5
        self._events = events

    @property
    def cached_tokens(self) -> int:
        return 0

    async def events(self) -> AsyncIterator[GenerationEvent]:
        for event in self._events:
            yield event

    def cancel(self) -> None:
        pass


class ScriptedEngine:
    capabilities = EngineCapabilities(supports_chat=True, supports_tools=True, supports_json=True)
    context_length = 2048

    def __init__(self) -> None:
        self.script: list[GenerationEvent] = []

    async def prepare(self, request: GenerationRequest) -> _Prepared:
        return _Prepared()

    def submit(self, prepared: object) -> list[_Generation]:
        return [_Generation(self.script)]

    def stats(self) -> EngineStats:
        return EngineStats(num_queued=0, num_active=0, num_slots=1)

    def close(self) -> None:
        pass


@dataclass
class Setup:
    chat: ChatService
    engine: ScriptedEngine
    metrics: Metrics
    model: str


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    catalog = default_catalog()
    entry = catalog.default_entry()
    engine = ScriptedEngine()
    database = Database.open(f"sqlite:///{tmp_path / 'usage.db'}")
    meter = UsageMeter(database, tmp_path / "usage-journal")
    metrics = Metrics()
    registry = ModelRegistry(catalog, {entry.id: engine})
    yield Setup(
        ChatService(registry, metrics, Admission(InProcessLimiter(), meter, database)), engine, metrics, entry.id
    )
    meter.close()
    database.close()


def _request(model: str, *, stream: bool = False) -> wire.ChatCompletionRequest:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    return wire.ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": "Weather?"}], "tools": [tool], "stream": stream}
    )


PRINCIPAL = Principal(key_id=None, project_id=None, project_name="tests")


async def test_a_withheld_reply_is_an_error_and_counted(setup: Setup) -> None:
    setup.engine.script = [
        GenerationEvent('[{"name"', 5, 2, is_tool_call=True),
        GenerationEvent("", 5, 3, FinishReason.ERROR, "the reply broke its constraint", is_invalid_output=True),
    ]
    run = await setup.chat.start(_request(setup.model), PRINCIPAL)
    with pytest.raises(GenerationFailedError) as info:
        await setup.chat.complete(run)
    assert info.value.code == "invalid_output" and info.value.status == 500
    assert setup.metrics.registry.get_sample_value("galerne_invalid_outputs_total", {"model": setup.model}) == 1


async def test_typed_calls_become_tool_calls_and_call_text_is_never_content(setup: Setup) -> None:
    setup.engine.script = [
        GenerationEvent('[{"name":"get_weather",', 5, 2, is_tool_call=True),
        GenerationEvent('"arguments":{"city":"Rome"}}]', 5, 9, FinishReason.TOOL_CALLS, tool_calls=(CALL,)),
    ]
    response = await setup.chat.complete(await setup.chat.start(_request(setup.model), PRINCIPAL))
    message = response.choices[0].message
    assert response.choices[0].finish_reason == "tool_calls" and message.content == ""
    assert message.tool_calls is not None and message.tool_calls[0].function == {
        "name": "get_weather", "arguments": '{"city": "Rome"}'}  # fmt: skip
    chunks = [
        chunk
        async for chunk in await setup.chat.stream(
            await setup.chat.start(_request(setup.model, stream=True), PRINCIPAL)
        )
    ]
    contents = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "[" not in contents
    calls = next(c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls)
    assert calls[0].id == CALL.id


async def test_a_cut_call_is_neither_text_nor_a_call(setup: Setup) -> None:
    setup.engine.script = [
        GenerationEvent('[{"name":"get_weather",', 5, 2, is_tool_call=True),
        GenerationEvent('"argu', 5, 10, FinishReason.LENGTH, is_tool_call=True),
    ]
    response = await setup.chat.complete(await setup.chat.start(_request(setup.model), PRINCIPAL))
    assert response.choices[0].finish_reason == "length"
    assert response.choices[0].message.content == "" and not response.choices[0].message.tool_calls


async def test_a_reply_closed_by_the_budget_is_length_and_counted(setup: Setup) -> None:
    setup.engine.script = [GenerationEvent('{"a":""}', 5, 10, FinishReason.LENGTH, is_closed_early=True)]
    response = await setup.chat.complete(await setup.chat.start(_request(setup.model), PRINCIPAL))
    assert response.choices[0].finish_reason == "length" and response.choices[0].message.content == '{"a":""}'
    sample = setup.metrics.registry.get_sample_value("galerne_closed_early_replies_total", {"model": setup.model})
    assert sample == 1


async def test_an_engine_without_logits_refuses_logprobs_text_completion_and_scoring(setup: Setup) -> None:
    """The scripted engine, like the remote one, offers no log-probabilities: 400s naming why, before any work."""
    asking = wire.ChatCompletionRequest.model_validate(
        {"model": setup.model, "messages": [{"role": "user", "content": "Hi"}], "logprobs": True}
    )
    with pytest.raises(UnsupportedFeatureError) as chat_error:
        await setup.chat.start(asking, PRINCIPAL)
    assert chat_error.value.param == "logprobs" and "log-probabilities" in chat_error.value.message
    completions = CompletionService(setup.chat)
    text = CompletionRequest.model_validate({"model": setup.model, "prompt": "Hi"})
    with pytest.raises(UnsupportedFeatureError) as text_error:
        await completions.start(text, PRINCIPAL)
    assert "chat completions only" in text_error.value.message
    with pytest.raises(UnsupportedFeatureError):
        await completions.score(setup.model, "The sky is", [" blue"], PRINCIPAL)
    fim = FimCompletionRequest.model_validate({"model": setup.model, "prompt": "def f():", "suffix": "\n"})
    with pytest.raises(UnsupportedFeatureError) as fim_error:
        await setup.chat.start_fim(fim, PRINCIPAL)
    assert fim_error.value.param == "model"
