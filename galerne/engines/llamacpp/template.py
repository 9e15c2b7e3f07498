"""Render a conversation with the model's own chat template (from the GGUF), in a Jinja sandbox.

Message contents are rendered as placeholders first, so the result comes back as segments that
say which text came from the template (may hold control tokens such as ``<|im_start|>``) and which
from users (tokenized with control-token parsing off). A user typing ``<|im_end|>`` therefore gets
plain text, never a turn boundary: the prompt-injection defence la Plateforme's tokenizers have.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from galerne.errors import ConfigurationError, InvalidRequestError
from galerne.inference.types import ChatMessage, Role

# ChatML, for GGUF files that carry no template.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    is_user_text: bool


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """The prompt's segments. `unseparated_user_texts` is set when the template transformed message
    contents so that user text could not be kept apart: the caller must then refuse control tokens in it."""

    segments: list[Segment]
    unseparated_user_texts: tuple[str, ...] = ()


def _raise_exception(message: str) -> None:
    raise InvalidRequestError(f"the model's chat template refused this conversation: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template; `render` is pure and thread-safe."""

    def __init__(self, source: str | None, *, bos_token: str, eos_token: str) -> None:
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        try:
            self._template = environment.from_string(source or FALLBACK_TEMPLATE)
        except TemplateError as exc:
            raise ConfigurationError(f"the model's chat template does not compile: {exc}") from exc
        self._bos_token = bos_token
        self._eos_token = eos_token

    def check(self) -> None:
        """Render a one-message conversation once, so that a template that fails on every request stops
        start-up (a `ConfigurationError` or `InvalidRequestError` naming the problem) instead of answering 400s."""
        sample = [ChatMessage(Role.USER, "Hello")]
        if not "".join(segment.text for segment in self.render(sample).segments).strip():
            raise ConfigurationError("the chat template renders an empty prompt")

    def render(self, messages: Sequence[ChatMessage], *, assistant_prefix: str | None = None) -> RenderedPrompt:
        """Segments of the prompt that asks the model for the next assistant turn (or continues `prefix`)."""
        contents = [message.content for message in messages]
        placeholders: list[dict[str, Any]] = [
            {"role": message.role.value, "content": f"\ue000{index}\ue001"}
            | ({"name": message.name} if message.name else {})
            for index, message in enumerate(messages)
        ]
        text = self._render(placeholders)
        segments = _split(text, contents)
        unseparated: tuple[str, ...] = ()
        if segments is None:  # the template transformed the content; render it for real
            text = self._render(
                [{"role": m.role.value, "content": m.content} | ({"name": m.name} if m.name else {}) for m in messages]
            )
            segments = [Segment(text, is_user_text=False)]
            unseparated = tuple(contents)
        if assistant_prefix:
            segments.append(Segment(assistant_prefix, is_user_text=True))
        return RenderedPrompt(segments, unseparated)

    def _render(self, messages: list[dict[str, Any]]) -> str:
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=True,
                bos_token=self._bos_token,
                eos_token=self._eos_token,
            )
        except InvalidRequestError:
            raise
        except TemplateError as exc:
            raise InvalidRequestError(f"the model's chat template failed on this conversation: {exc}") from exc


def _split(text: str, contents: list[str]) -> list[Segment] | None:
    segments: list[Segment] = []
    position = 0
    seen = 0
    for match in _PLACEHOLDER.finditer(text):
        index = int(match.group(1))
        if index >= len(contents):
            return None
        if match.start() > position:
            segments.append(Segment(text[position : match.start()], is_user_text=False))
        if contents[index]:
            segments.append(Segment(contents[index], is_user_text=True))
        position = match.end()
        seen += 1
    if seen != len(contents) or "\ue000" in text[position:]:
        return None
    if position < len(text):
        segments.append(Segment(text[position:], is_user_text=False))
    return segments
