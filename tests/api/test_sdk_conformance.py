"""The official `openai` and `mistralai` SDKs, unchanged, against a real server on loopback."""

from __future__ import annotations

import openai
import pytest
from mistralai.client import Mistral
from mistralai.client import errors as mistral_errors

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_openai_answers_the_capital_of_france(openai_client: openai.OpenAI, model_id: str) -> None:
    response = openai_client.chat.completions.create(model=model_id, messages=QUESTION, max_tokens=30)
    assert "Paris" in (response.choices[0].message.content or "")
    assert response.choices[0].finish_reason == "stop"
    assert response.object == "chat.completion"
    assert len(response.id) == 32
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_openai_streams_the_same_answer(openai_client: openai.OpenAI, model_id: str) -> None:
    chunks = list(
        openai_client.chat.completions.create(model=model_id, messages=QUESTION, max_tokens=30, stream=True)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert "Paris" in text
    assert all(chunk.usage is None for chunk in chunks[:-1])
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert len({chunk.id for chunk in chunks}) == 1


def test_streamed_and_plain_greedy_answers_agree(openai_client: openai.OpenAI, model_id: str) -> None:
    messages = [{"role": "user", "content": "Name three colours."}]
    plain = openai_client.chat.completions.create(model=model_id, messages=messages, max_tokens=24, temperature=0)
    streamed = openai_client.chat.completions.create(
        model=model_id, messages=messages, max_tokens=24, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed)
    assert text == plain.choices[0].message.content


def test_max_tokens_cuts_with_length(openai_client: openai.OpenAI, model_id: str) -> None:
    response = openai_client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Write a long story."}], max_tokens=5
    )
    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == 5


def test_stop_string_is_not_returned(openai_client: openai.OpenAI, model_id: str) -> None:
    response = openai_client.chat.completions.create(
        model=model_id, messages=QUESTION, max_tokens=30, stop=["Paris"]
    )
    content = response.choices[0].message.content or ""
    assert "Paris" not in content
    assert content.startswith("The capital of France is")
    assert response.choices[0].finish_reason == "stop"


def test_n_choices_with_seed_are_reproducible(openai_client: openai.OpenAI, model_id: str) -> None:
    kwargs = dict(model=model_id, messages=QUESTION, max_tokens=12, temperature=1.0, seed=7, n=3)
    first = openai_client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    second = openai_client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]
    assert first.usage is not None and first.usage.prompt_tokens == second.usage.prompt_tokens  # type: ignore[union-attr]


def test_mistral_sdk_completes(mistral_client: Mistral, model_id: str) -> None:
    response = mistral_client.chat.complete(model=model_id, messages=QUESTION, max_tokens=30)  # type: ignore[arg-type]
    assert response.choices is not None
    assert "Paris" in str(response.choices[0].message.content)
    assert response.usage.prompt_tokens > 0


def test_mistral_sdk_streams(mistral_client: Mistral, model_id: str) -> None:
    events = list(mistral_client.chat.stream(model=model_id, messages=QUESTION, max_tokens=30))  # type: ignore[arg-type]
    text = "".join(str(event.data.choices[0].delta.content or "") for event in events)
    assert "Paris" in text
    assert events[-1].data.choices[0].finish_reason == "stop"
    assert events[-1].data.usage is not None


def test_mistral_prefix_continues_the_assistant_message(mistral_client: Mistral, model_id: str) -> None:
    prefix = "The capital of France is"
    response = mistral_client.chat.complete(
        model=model_id,
        messages=[*QUESTION, {"role": "assistant", "content": prefix, "prefix": True}],  # type: ignore[list-item]
        max_tokens=10,
    )
    assert response.choices is not None
    content = str(response.choices[0].message.content)
    assert content.startswith(prefix)
    assert "Paris" in content[len(prefix) :]


def test_sdks_surface_error_messages(
    openai_client: openai.OpenAI, mistral_client: Mistral, model_id: str
) -> None:
    with pytest.raises(openai.NotFoundError) as openai_error:
        openai_client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert "no-such-model" in str(openai_error.value)
    with pytest.raises(openai.BadRequestError) as bad_order:
        openai_client.chat.completions.create(model=model_id, messages=[{"role": "assistant", "content": "hi"}])
    assert "Expected first role" in str(bad_order.value)
    with pytest.raises(mistral_errors.MistralError) as mistral_error:
        mistral_client.chat.complete(model="no-such-model", messages=QUESTION)  # type: ignore[arg-type]
    assert "no-such-model" in str(mistral_error.value)


def test_openai_chat_logprobs(openai_client: openai.OpenAI, model_id: str) -> None:
    response = openai_client.chat.completions.create(
        model=model_id, messages=QUESTION, max_tokens=8, logprobs=True, top_logprobs=2
    )
    logprobs = response.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(entry.token for entry in logprobs.content) == response.choices[0].message.content
    assert all(len(entry.top_logprobs) == 2 and entry.logprob <= 0 for entry in logprobs.content)


def test_openai_text_completion_with_logprobs(openai_client: openai.OpenAI, model_id: str) -> None:
    prompt = "The capital of France is"
    scored = openai_client.completions.create(model=model_id, prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    logprobs = scored.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs
    assert "".join(logprobs.tokens) == prompt and logprobs.token_logprobs[0] is None
    reply = openai_client.completions.create(model=model_id, prompt=prompt, max_tokens=4, logprobs=1)
    assert reply.object == "text_completion" and reply.choices[0].text
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    streamed = "".join(
        chunk.choices[0].text
        for chunk in openai_client.completions.create(model=model_id, prompt=prompt, max_tokens=4, stream=True)
        if chunk.choices
    )
    assert streamed == reply.choices[0].text
