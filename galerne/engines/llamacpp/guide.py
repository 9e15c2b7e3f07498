"""Hold one request to its constraint: mask its logits, follow its text, and read the finished reply.

Only constrained sequences carry a guide, so unconstrained ones pay nothing. Before sampling, tokens
the grammar forbids get -inf; tokens the grammar forces (`{"name":"` after `[`) are fast-forwarded:
decoded in the next batch without sampling. The guide's `OutputReader` tells which text is part of a
tool call and, at the end, returns the typed calls or refuses a reply that breaks its schema.
"""

from __future__ import annotations

import llguidance
import llguidance.numpy as lnp
import numpy as np
import numpy.typing as npt

from galerne.inference.constraints import OutputConstraint
from galerne.inference.types import FinishReason, GenerationEvent
from galerne.structured.grammars import GrammarCache
from galerne.structured.outputs import OutputReader, OutputViolation
from galerne.structured.refusals import plain_reason


class GrammarViolation(RuntimeError):
    """The matcher refused a token (it cannot happen when the mask was applied; reported as an error)."""


class GrammarGuide:
    def __init__(self, matcher: llguidance.LLMatcher, num_vocab: int, reader: OutputReader) -> None:
        self._matcher = matcher
        self._num_vocab = num_vocab
        self._bitmask = lnp.allocate_token_bitmask(1, num_vocab)
        self.reader = reader

    @classmethod
    def for_constraint(cls, grammars: GrammarCache, constraint: OutputConstraint, num_vocab: int) -> GrammarGuide:
        """A guide with a fresh matcher (it holds the parse state); raises 400 if the grammar cannot compile."""
        return cls(grammars.matcher(constraint), num_vocab, OutputReader(constraint))

    @property
    def is_done(self) -> bool:
        """The grammar is complete: nothing but end-of-text may follow."""
        return self._matcher.is_stopped()

    @property
    def is_complete(self) -> bool:
        """What was generated so far is a whole reply the grammar accepts (it may still go on)."""
        return self._matcher.is_accepting()

    def starts_tool_call(self, data: bytes) -> bool:
        """True for the first piece of a reply that turns out to be a tool call (false ever after)."""
        if self.reader.is_decided:
            return False
        return self.reader.decides_tool_call(data.decode(errors="replace"))

    def mask(self, logits: npt.NDArray[np.float32]) -> None:
        """Set the logits of tokens the grammar forbids next to -inf, in place."""
        lnp.fill_next_token_bitmask(self._matcher, self._bitmask, 0)
        if self._matcher.is_error():
            raise GrammarViolation(self._matcher.get_error())
        allowed = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[: self._num_vocab].view(bool)
        np.copyto(logits[: allowed.size], np.float32(-np.inf), where=~allowed)

    def accept(self, token: int) -> list[int]:
        """Consume the sampled token; returns the tokens the grammar now forces (already consumed)."""
        if not self._matcher.consume_token(token):
            raise GrammarViolation(self._matcher.get_error() or f"token {token} refused by the grammar")
        if self._matcher.is_stopped():
            return []
        forced = self._matcher.compute_ff_tokens()
        if forced and not self._matcher.consume_tokens(forced):
            raise GrammarViolation(self._matcher.get_error() or "forced tokens refused by the grammar")
        return forced

    def final_event(self, event: GenerationEvent) -> GenerationEvent:
        """The last event of the reply, read by the reader: typed tool calls, or an error if it broke its schema.

        A reply that ended because the model stopped is checked; so is one cut by `max_tokens` at a point
        where the grammar was complete. A reply cut mid-structure stays `length`: its JSON is reported as
        incomplete, and a cut tool call is never shown (no text, no calls).
        """
        event.is_tool_call = self.reader.push(event.text)
        if event.finish_reason not in (FinishReason.STOP, FinishReason.LENGTH):
            return event
        if event.finish_reason is FinishReason.LENGTH and not self.is_complete:
            return event
        try:
            event.tool_calls = self.reader.finish()
        except OutputViolation as exc:
            return GenerationEvent(
                "",
                event.prompt_tokens,
                event.completion_tokens,
                FinishReason.ERROR,
                f"the model's reply broke its constraint and was withheld: {exc}",
                is_invalid_output=True,
            )
        if event.tool_calls and event.finish_reason is FinishReason.STOP:
            event.finish_reason = FinishReason.TOOL_CALLS
        return event

    def error_event(self, event: GenerationEvent, error: GrammarViolation) -> GenerationEvent:
        """The error event of a reply whose grammar failed while decoding, in plain words."""
        event.finish_reason = FinishReason.ERROR
        event.error = f"the output constraint could not be enforced: {plain_reason(str(error))}"
        event.is_invalid_output = True
        event.text = ""
        return event
