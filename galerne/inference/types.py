"""What engines accept and emit. Engines see only these validated types, never wire schemas."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from galerne.errors import GalerneError
from galerne.inference.constraints import OutputConstraint


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    ERROR = "error"
    CANCELLED = "cancelled"
    CONTENT_FILTER = "content_filter"  # a moderation policy replaced or stopped the reply


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the assistant made (earlier in the conversation, or in this reply); `arguments` is JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A normalised message: content is plain text, chunk lists are already joined."""

    role: Role
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


# Below this a temperature is greedy: dividing float32 logits by it overflows to inf/NaN (vLLM: 1e-5).
MIN_SAMPLING_TEMPERATURE = 1e-5


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick tokens. A temperature near 0 means greedy; `seed` makes sampling reproducible."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_tokens: int = 0  # the end of generation is not sampled before this many tokens (la Plateforme's FIM)

    @property
    def is_greedy(self) -> bool:
        return self.temperature < MIN_SAMPLING_TEMPERATURE

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    def for_choice(self, index: int) -> SamplingParams:
        """Choice `index` of `n`: a seeded request gets seed+index, so choices differ yet stay reproducible.

        The sum wraps within 64 bits: a seed at the wire's bound stays one every sampler can take.
        """
        if index == 0 or self.seed is None:
            return self
        return replace(self, seed=(self.seed + index) % 2**64)


@dataclass(frozen=True, slots=True)
class TextPrompt:
    """Text continued as it is, without a chat template (`/v1/completions`, scoring).

    Without `continuations` every choice continues `text`; a scored prompt (`echo`) then gets a
    log-probability for every token after the first, which nothing predicts. With `continuations` (one per
    choice), choice i's prompt is `text` followed by `continuations[i]`, and its scored span is the
    continuation's tokens, split from the context at the context's own token boundary as lm-eval-harness
    does: tokens(text) + tokens(text + continuation)[len(tokens(text)):]. The choices share the context's KV.
    """

    text: str
    continuations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FimPrompt:
    """Fill in the middle: the model writes what goes between `prefix` and `suffix`."""

    prefix: str
    suffix: str = ""


@dataclass(frozen=True, slots=True)
class LogprobOptions:
    """Which log-probabilities a generation reports; all are of the raw model distribution.

    They are the log-softmax of the model's logits, before temperature, top_p, penalties or a grammar mask
    (OpenAI's and vLLM's default semantics): what the model thinks, not what the sampler drew from.
    `num_top` alternatives (0..20) come with each token; `of_prompt` adds the prompt tokens (`echo`, scoring).
    """

    num_top: int = 0
    of_completion: bool = True
    of_prompt: bool = False


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: int
    piece: bytes
    logprob: float


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One token and its log-probability; `logprob` is None for a prompt's first token, which nothing predicts.

    `is_argmax` says the token was the model's most likely choice (lm-eval's `is_greedy`, per token).
    """

    token: int
    piece: bytes
    logprob: float | None
    top: tuple[TopLogprob, ...] = ()
    is_argmax: bool = False


@dataclass(frozen=True, slots=True)
class DocumentRef:
    """A document a user message hands to the chat: an uploaded file's id, or the file itself inline.

    Engines never see one: the documents service replaces them with the documents' text (or the passages
    retrieved from them) before the request is prepared.
    """

    message_index: int
    file_id: str | None = None
    filename: str | None = None
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A validated chat request: the conversation, how to sample it, and an optional reply prefix.

    `assistant_prefix` is the text of a last assistant message sent with `prefix: true`; the reply
    continues it (la Plateforme's semantics) and does not repeat it. `constraint`, when set, is a
    guarantee about the reply's shape that the engine must enforce while decoding. `is_streamed` says
    whether the client reads the reply as it comes; an engine may produce it whole when it does not.
    `num_choices` replies are generated from the one prompt (OpenAI's `n`): an engine prepares the prompt
    once and may share its KV between them.

    `prompt`, when set, replaces the chat template: raw text (`/v1/completions`) or fill-in-the-middle parts;
    `messages` is then empty. `logprobs`, when set, asks for log-probabilities (see `LogprobOptions`).
    """

    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    assistant_prefix: str | None = None
    constraint: OutputConstraint | None = None
    is_streamed: bool = True
    num_choices: int = 1
    prompt: TextPrompt | FimPrompt | None = None
    logprobs: LogprobOptions | None = None
    documents: tuple[DocumentRef, ...] = ()


@dataclass(slots=True)
class GenerationEvent:
    """One step of a running generation, pushed from the engine thread to the request's consumer.

    `text` is new, complete UTF-8 text (stop strings held back until ruled out); the last event has a
    `finish_reason`. Token counts are cumulative so a consumer that stops reading still knows them.
    A failed generation ends with `finish_reason == ERROR`: `error` says what went wrong, and `failure`,
    when the engine knows better than a generic 500 (a remote upstream's 502, 504 or 4xx), is the error
    the client gets.

    The engine owns the tool-call format: `is_tool_call` marks text that is part of a call (never reply
    text: a consumer holds it back or drops it), and the final event of a reply that called tools carries
    them, parsed and checked, in `tool_calls`. `is_invalid_output` marks an error event whose reply broke
    its constraint (counted apart: it is never sent as a success). `is_closed_early` says a constrained
    reply was steered to its shortest valid ending because `max_tokens` was running out.

    With `LogprobOptions`, `logprobs` holds the generated tokens since the previous event (text held back
    for a stop string carries its tokens along to the event that releases it), and the first event of a
    sequence whose prompt was scored holds `prompt_logprobs`: every prompt token (a leading BOS left out),
    with a log-probability for those in the scored span.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None
    error: str | None = None
    failure: GalerneError | None = None
    is_tool_call: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    is_invalid_output: bool = False
    is_closed_early: bool = False
    logprobs: tuple[TokenLogprob, ...] = ()
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None
