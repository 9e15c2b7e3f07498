"""Token log-probabilities in the two wire shapes OpenAI defined: chat's and the legacy completions'.

A token is shown as its text when its bytes are whole UTF-8, and as `bytes:\\xe2\\x80` (OpenAI's and
tiktoken's convention) when it holds part of a character; chat's `bytes` field always has the truth.
Legacy `text_offset`s count characters of the choice's text, decoding the tokens' bytes in order, so a
character split across tokens is counted once, at the token that completes it.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from galerne.inference.types import TokenLogprob
from galerne.protocol import chat as chat_wire
from galerne.protocol import completions as completions_wire


def token_text(piece: bytes) -> str:
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{byte:02x}" for byte in piece)


def chat_logprobs(entries: Sequence[TokenLogprob]) -> chat_wire.ChoiceLogprobs:
    """`choices[i].logprobs` of a chat completion (or of one stream chunk) for `entries`."""
    content = []
    for entry in entries:
        tops = [
            chat_wire.TopLogprob(token=token_text(top.piece), logprob=top.logprob, bytes=list(top.piece))
            for top in entry.top
        ]
        logprob = entry.logprob if entry.logprob is not None else 0.0
        content.append(
            chat_wire.TokenLogprob(
                token=token_text(entry.piece), logprob=logprob, bytes=list(entry.piece), top_logprobs=tops
            )
        )
    return chat_wire.ChoiceLogprobs(content=content)


class LegacyLogprobs:
    """Builds `choices[i].logprobs` of `/v1/completions` incrementally (a stream sends it chunk by chunk)."""

    def __init__(self, num_top: int) -> None:
        self._num_top = num_top
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._offset = 0

    def add(self, entries: Sequence[TokenLogprob]) -> completions_wire.CompletionLogprobs:
        """The lists for the next `entries`, with offsets continuing from the tokens added before."""
        tokens: list[str] = []
        token_logprobs: list[float | None] = []
        top_logprobs: list[dict[str, float] | None] = []
        offsets: list[int] = []
        for entry in entries:
            tokens.append(token_text(entry.piece))
            token_logprobs.append(entry.logprob)
            offsets.append(self._offset)
            self._offset += len(self._decoder.decode(entry.piece))
            if entry.logprob is None:
                top_logprobs.append(None)
                continue
            # As OpenAI documents: the chosen token is always there, so a dict holds up to num_top + 1 entries.
            tops = {token_text(top.piece): top.logprob for top in entry.top[: self._num_top]}
            tops.setdefault(token_text(entry.piece), entry.logprob)
            top_logprobs.append(tops)
        return completions_wire.CompletionLogprobs(
            tokens=tokens, token_logprobs=token_logprobs, top_logprobs=top_logprobs, text_offset=offsets
        )

