"""Hold one request to its constraint: mask its logits, follow its text, and read the finished reply.

Only constrained sequences carry a guide, so unconstrained ones pay nothing. Before sampling, tokens
the grammar forbids get -inf; tokens the grammar forces (`{"name":"` after `[`) are fast-forwarded:
decoded in the next batch without sampling. Where the grammar may end, every end-of-generation token
of the vocabulary is allowed, not only the one llguidance knows. Two steers keep replies from running
out of budget: a penalty on repeats (`repetition`) and, near the end of `max_tokens`, closing
(`closing`). The guide's `OutputReader` tells which text is part of a tool call and, at the end,
returns the typed calls or refuses a reply that breaks its schema.
"""

from __future__ import annotations

import llguidance
import llguidance.numpy as lnp
import numpy as np
import numpy.typing as npt

from galerne.engines.llamacpp.closing import BudgetCloser, TokenClasses
from galerne.engines.llamacpp.repetition import penalise_repeats
from galerne.inference.constraints import OutputConstraint
from galerne.inference.types import FinishReason, GenerationEvent
from galerne.structured.grammars import GrammarCache
from galerne.structured.outputs import OutputReader, OutputViolation
from galerne.structured.refusals import plain_reason


class GrammarViolation(RuntimeError):
    """The matcher refused a token (it cannot happen when the mask was applied; reported as an error)."""


class GrammarGuide:
    def __init__(self, matcher: llguidance.LLMatcher, classes: TokenClasses, reader: OutputReader) -> None:
        self._matcher = matcher
        self._num_vocab = classes.num_vocab
        self._ending = classes.ending
        self._bitmask = lnp.allocate_token_bitmask(1, self._num_vocab)
        self._closer = BudgetCloser(classes)
        self._history: list[int] = []  # every token of the reply, sampled or forced (for the loop guard)
        self.reader = reader

    @classmethod
    def for_constraint(
        cls, grammars: GrammarCache, constraint: OutputConstraint, classes: TokenClasses
    ) -> GrammarGuide:
        """A guide with a fresh matcher (it holds the parse state); raises 400 if the grammar cannot compile."""
        return cls(grammars.matcher(constraint), classes, OutputReader(constraint))

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

    @property
    def is_closing(self) -> bool:
        """The budget is running out and the reply is being steered to its shortest valid end."""
        return self._closer.is_closing

    def mask(self, logits: npt.NDArray[np.float32], tokens_left: int) -> None:
        """Prepare `logits` for sampling, in place: -inf for tokens the grammar forbids next, a penalty on
        tokens that would extend a repeat, and, when `tokens_left` is about to run out, only tokens that
        lead to the end of the structure."""
        lnp.fill_next_token_bitmask(self._matcher, self._bitmask, 0)
        if self._matcher.is_error():
            raise GrammarViolation(self._matcher.get_error())
        allowed = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[: self._num_vocab].view(bool)
        if (allowed & self._ending).any():
            # llguidance knows one end-of-text token; a model may end its turn with another one (Gemma's
            # <end_of_turn> beside <eos>, or a catalogue stop token): where the grammar may end, any of them may.
            allowed = allowed | self._ending
        np.copyto(logits[: allowed.size], np.float32(-np.inf), where=~allowed)
        if self.reader.is_free_text:
            return  # a text reply under `tool_choice: auto`: nothing to close, no structure to loop in
        penalise_repeats(logits, self._history)
        self._closer.update(self._matcher, tokens_left)
        if self._closer.is_closing:
            self._closer.steer(logits, allowed, is_complete=self._matcher.is_accepting())

    def may_veto(self, tokens_left: int) -> bool:
        """Whether `vetoes` may refuse this step's draw (only near the end of the budget)."""
        return not self.reader.is_free_text and self._closer.may_veto(tokens_left)

    def vetoes(self, token: int, logits: npt.NDArray[np.float32], tokens_left: int) -> bool:
        """Whether the drawn `token` would open what the budget cannot close; `logits` (as `mask` left them)
        then forbid it and its like, and the caller draws again."""
        return self._closer.veto(self._matcher, token, logits, tokens_left)

    def accept(self, token: int, max_forced: int | None = None) -> list[int]:
        """Consume the sampled token; returns the tokens the grammar now forces (already consumed), at most
        `max_forced` of them, so that the matcher never runs ahead of the text the budget lets out."""
        if not self._matcher.consume_token(token):
            raise GrammarViolation(self._matcher.get_error() or f"token {token} refused by the grammar")
        self._follow([token])
        if self._matcher.is_stopped():
            return []
        forced = self._matcher.compute_ff_tokens()[:max_forced]
        if forced and not self._matcher.consume_tokens(forced):
            raise GrammarViolation(self._matcher.get_error() or "forced tokens refused by the grammar")
        self._follow(forced)
        return forced

    def _follow(self, tokens: list[int]) -> None:
        self._history.extend(tokens)
        self._closer.follow(tokens)

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
        if self._closer.is_closing or self._closer.has_vetoed:  # the budget ended this reply, not the model
            event.finish_reason = FinishReason.LENGTH
            event.is_closed_early = True
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
