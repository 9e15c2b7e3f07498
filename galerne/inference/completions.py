"""The only way from a text-completion or FIM wire request to a `GenerationRequest`.

Like `validate` for chat: pydantic already checked types and ranges (422); what is left are the rules that
give a 400 saying how to fix the request. OpenAI's legacy fields that Galerne does not implement
(`best_of` other than `n`, `logit_bias`, token-id prompts) are refused, never ignored.
"""

from __future__ import annotations

from galerne.errors import InvalidRequestError, UnsupportedFeatureError
from galerne.inference.types import FimPrompt, GenerationRequest, LogprobOptions, SamplingParams, TextPrompt
from galerne.inference.validate import check_num_top, checked_stop
from galerne.protocol import completions as wire


def completion_request(request: wire.CompletionRequest, *, default_temperature: float) -> GenerationRequest:
    """`/v1/completions`: one text prompt (or, with `suffix`, fill in the middle), continued `n` times.

    Example: ``completion_request(CompletionRequest(model="m", prompt="Paris is", echo=True, logprobs=1,
    max_tokens=0), default_temperature=0.0)`` scores the prompt without generating.
    """
    text = _single_prompt(request.prompt)
    if request.best_of is not None and request.best_of != request.n:
        raise UnsupportedFeatureError("`best_of` is not supported; remove it (or set it to `n`)", param="best_of")
    if request.logit_bias:
        raise UnsupportedFeatureError("`logit_bias` is not supported; remove it", param="logit_bias")
    if request.suffix is not None and request.echo:
        raise InvalidRequestError("`echo` cannot be combined with `suffix`", param="echo")
    logprobs = None
    if request.logprobs is not None:
        check_num_top(request.logprobs, param="logprobs")
        logprobs = LogprobOptions(num_top=request.logprobs, of_prompt=request.echo)
    prompt: TextPrompt | FimPrompt = TextPrompt(text) if request.suffix is None else FimPrompt(text, request.suffix)
    sampling = SamplingParams(
        temperature=default_temperature if request.temperature is None else request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_tokens,
        stop=checked_stop(request.stop),
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
    )
    return GenerationRequest(
        messages=(),
        sampling=sampling,
        is_streamed=request.stream,
        num_choices=request.n,
        prompt=prompt,
        logprobs=logprobs,
    )


def fim_request(request: wire.FimCompletionRequest, *, default_temperature: float) -> GenerationRequest:
    """`/v1/fim/completions`: the model writes what goes between `prompt` and `suffix`."""
    if (
        request.min_tokens is not None
        and request.max_tokens is not None
        and request.min_tokens > request.max_tokens
    ):
        raise InvalidRequestError(
            f"`min_tokens` ({request.min_tokens}) is more than `max_tokens` ({request.max_tokens})",
            param="min_tokens",
        )
    sampling = SamplingParams(
        temperature=default_temperature if request.temperature is None else request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_tokens,
        min_tokens=request.min_tokens or 0,
        stop=checked_stop(request.stop),
        seed=request.random_seed,
    )
    return GenerationRequest(
        messages=(),
        sampling=sampling,
        is_streamed=request.stream,
        prompt=FimPrompt(request.prompt, request.suffix or ""),
    )


def _single_prompt(prompt: str | list[str]) -> str:
    if isinstance(prompt, str):
        return prompt
    if len(prompt) != 1:
        raise UnsupportedFeatureError(
            f"`prompt` holds {len(prompt)} texts; send one per request (batches of prompts are not supported)",
            param="prompt",
        )
    return prompt[0]
