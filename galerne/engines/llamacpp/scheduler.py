"""Continuous batching over llama.cpp slots: who runs in the next `llama_decode`, and what came out.

One `Scheduler` per loaded model, driven by the engine thread:

- `add` queues a tokenized sequence; `admit` moves queued sequences into free slots (see `_pick_slot`:
  the slot that keeps the busy slot ids contiguous, unless another one holds a much longer prefix of the
  prompt — multi-turn chats re-send their whole history every turn, and only the rest is prefilled);
  a prefix held by another slot, busy or free, is copied (`llama_memory_seq_cp`) when it saves more than
  `PREFIX_WORTH_A_COPY` tokens of prefill — a shared system prompt, the moderation classifier's
  instructions, the 2nd..nth choices of one request — instead of being computed again;
- `schedule` fills one batch: one token for every decoding sequence first (so decoding is never
  starved), then prompt chunks within what is left of the batch, and writes the rows **in slot order**;
- `postprocess` samples every sequence whose logits are ready, emits text, and frees the slot of a
  finished or cancelled sequence at once. A free slot keeps its KV for later prefix reuse.

A scored prompt (`echo`, `score`) asks for logits over its scored span only; the prefix before it can
come from the cache (the context shared by several continuations is computed once), the span itself is
always decoded. With `max_new_tokens == 0` such a sequence ends when its prompt is done, sampling nothing.

Why rows go in slot order: with one KV stream per slot (`kv_unified = False`), llama.cpp splits a batch
into micro-batches that each take an equal number of tokens from a run of *consecutive, increasing*
sequence ids, in batch order (`llama_batch_allocr::split_equal`). Eight decode rows for slots 0..7 are
one forward pass; the same rows shuffled are two to six passes (measured on 2 cores with SmolLM2: 38 ms
for one pass, 48/56/66/69/72 ms for 2..6). Sorting the rows and keeping busy slots contiguous is what lets
continuous batching pay off (docs/engine.md).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from galerne.engines.llamacpp.context import LlamaContext
from galerne.engines.llamacpp.guide import GrammarGuide, GrammarViolation
from galerne.engines.llamacpp.logprobs import log_softmax, token_logprob
from galerne.engines.llamacpp.model import LlamaModel
from galerne.engines.llamacpp.sampler import TokenSampler
from galerne.engines.llamacpp.text import TextAssembler
from galerne.inference.types import FinishReason, GenerationEvent, LogprobOptions, TokenLogprob

EventSink = Callable[[GenerationEvent], None]


@dataclass(eq=False)
class Sequence:
    """A request inside the engine: its prompt, how far it got, and where its events go."""

    prompt: list[int]
    max_new_tokens: int
    sampler: TokenSampler
    text: TextAssembler
    emit: EventSink
    guide: GrammarGuide | None = None
    is_cancelled: bool = False
    num_generated: int = 0
    num_prefilled: int = 0
    num_cached: int = 0
    pending: list[int] = field(default_factory=list)  # sampled (and forced) tokens not yet decoded
    logits_row: int = -1
    slot: Slot | None = None
    # Choices 2..n of a request point at choice 1, whose prompt KV they copy once it is computed.
    shares_prompt_with: Sequence | None = None
    logprobs: LogprobOptions | None = None
    # Prompt tokens from this index on get a log-probability (>= 1: the first token has no predecessor);
    # tokens before `visible_from` (a BOS the text did not contain) are not reported.
    scored_from: int | None = None
    visible_from: int = 0
    prompt_logprobs: list[TokenLogprob] | None = None
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_rows: list[tuple[int, int]] = field(default_factory=list)  # (batch row, prompt index it predicts)
    last_slot: Slot | None = None  # where it ran: its KV may still be there for the choices that follow it

    @property
    def is_prefilling(self) -> bool:
        """Admitted, but its prompt's KV is not complete yet (nothing generated so far)."""
        return self.slot is not None and self.num_generated == 0

    def finish_event(self, text: str, reason: FinishReason, error: str | None = None) -> GenerationEvent:
        return GenerationEvent(text, len(self.prompt), self.num_generated, reason, error)

    def send(self, event: GenerationEvent) -> None:
        """Emit `event` with the log-probabilities gathered since the last one (the prompt's, once)."""
        if self.pending_logprobs:
            event.logprobs = tuple(self.pending_logprobs)
            self.pending_logprobs.clear()
        if self.prompt_logprobs is not None:
            event.prompt_logprobs = tuple(self.prompt_logprobs[self.visible_from :])
            self.prompt_logprobs = None
        self.emit(event)


@dataclass(eq=False)
class Slot:
    """A llama.cpp sequence id; `tokens` mirrors exactly what its KV stream holds."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    sequence: Sequence | None = None
    last_used: float = 0.0


class Scheduler:
    def __init__(self, model: LlamaModel, num_slots: int) -> None:
        self._model = model
        self.slots = [Slot(seq_id) for seq_id in range(num_slots)]
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._end_tokens = np.array(model.end_of_generation_tokens, dtype=np.intp)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_active(self) -> int:
        return len(self.running)

    def add(self, sequence: Sequence) -> None:
        self.waiting.append(sequence)

    def drop_cancelled(self) -> None:
        """Release everything whose client went away, before spending compute on it."""
        if any(sequence.is_cancelled for sequence in self.waiting):
            for sequence in [s for s in self.waiting if s.is_cancelled]:
                self.waiting.remove(sequence)
                sequence.send(sequence.finish_event("", FinishReason.CANCELLED))
        if any(sequence.is_cancelled for sequence in self.running):
            for sequence in [s for s in self.running if s.is_cancelled]:
                self._release(sequence)
                sequence.send(sequence.finish_event("", FinishReason.CANCELLED))

    def admit(self, context: LlamaContext) -> None:
        """Move queued sequences into free slots, first come first served.

        A later choice of a request waits while its first choice is still prefilling, then copies that
        KV (one `llama_memory_seq_cp`) instead of computing the same prompt again.
        """
        for sequence in list(self.waiting):
            free = [slot for slot in self.slots if slot.sequence is None]
            if not free:
                return
            leader = sequence.shares_prompt_with
            if leader is not None and leader.is_prefilling:
                continue
            self.waiting.remove(sequence)
            if leader is not None:  # its prompt is the very same: copied whatever it costs
                source, copy_cost = leader.slot or leader.last_slot, 0
            else:
                source, copy_cost = _prefix_holder(self.slots, sequence.prompt), PREFIX_WORTH_A_COPY
            slot = _pick_slot(self.slots, free, sequence.prompt, source, copy_cost)
            self._assign(sequence, slot, context, source, copy_cost)

    def schedule(self, context: LlamaContext) -> bool:
        """Fill the batch in slot order; returns False when there is nothing to decode.

        Space goes first to decoding sequences (one token each, or the tokens a grammar forced), then
        to prompt chunks, oldest request first; the rows are then written in increasing slot order so
        that llama.cpp runs the decode rows of contiguous slots in one forward pass.
        """
        space = context.space_left
        rows: list[tuple[Sequence, list[int], bool]] = []
        for sequence in self.running:
            if sequence.pending and space > 0:
                tokens = sequence.pending[:space]
                sequence.pending = sequence.pending[len(tokens) :]
                rows.append((sequence, tokens, not sequence.pending))
                space -= len(tokens)
        for sequence in self.running:
            remaining = len(sequence.prompt) - sequence.num_prefilled
            if remaining <= 0 or space <= 0:
                continue
            count = min(remaining, space)
            start = sequence.num_prefilled
            sequence.num_prefilled += count
            is_complete = sequence.num_prefilled == len(sequence.prompt)
            rows.append((sequence, sequence.prompt[start : start + count], is_complete))
            space -= count
        rows.sort(key=lambda row: _seq_id(row[0]))
        for sequence, tokens, wants_logits in rows:
            self._append(sequence, tokens, context, wants_logits=wants_logits)
        return context.num_tokens > 0

    def _scored_rows(self, sequence: Sequence, start: int, count: int, row: int) -> int | None:
        """For a prompt chunk at prompt index `start` written from batch row `row`: the offset of its first row
        whose logits score the next prompt token (None: none does), remembering which rows predict which."""
        if sequence.scored_from is None or sequence.num_generated or start >= len(sequence.prompt):
            return None
        first = max(0, sequence.scored_from - 1 - start)
        last = min(count, len(sequence.prompt) - 1 - start)  # the prompt's last row predicts no prompt token
        if first >= last:
            return None
        sequence.prompt_rows.extend((row + offset, start + offset + 1) for offset in range(first, last))
        return first

    def postprocess(self, context: LlamaContext) -> None:
        """Sample each sequence whose logits the last decode produced; finish those that are done."""
        for sequence in list(self.running):
            if sequence.prompt_rows:
                self._score_prompt(sequence, context)
            if sequence.logits_row < 0:
                continue
            if sequence.max_new_tokens == 0:  # a scored prompt and nothing to generate: done
                sequence.logits_row = -1
                self._finish(sequence, "", FinishReason.LENGTH)
                continue
            logits = context.logits(sequence.logits_row)
            options = sequence.logprobs
            raw = log_softmax(logits) if options is not None and options.of_completion else None
            if sequence.guide is not None:
                try:
                    sequence.guide.mask(logits, sequence.max_new_tokens - sequence.num_generated)
                except GrammarViolation as exc:
                    self._fail_guide(sequence, exc)
                    continue
            if sequence.num_generated < sequence.sampler.min_tokens:
                logits[self._end_tokens] = -np.inf
            guide, tokens_left = sequence.guide, sequence.max_new_tokens - sequence.num_generated
            # The sampler scribbles on its row: keep the masked logits for a second draw near the budget's end.
            masked = logits.copy() if guide is not None and guide.may_veto(tokens_left) else None
            token = sequence.sampler.sample(logits)
            if guide is not None and masked is not None and guide.vetoes(token, masked, tokens_left):
                token = sequence.sampler.redraw(masked, withdrawn=token)  # it opened what the budget cannot close
            if raw is not None and options is not None:
                sequence.pending_logprobs.append(token_logprob(raw, token, options.num_top, self._model.pieces))
            sequence.logits_row = -1
            sequence.num_generated += 1
            self._advance(sequence, token)

    def _score_prompt(self, sequence: Sequence, context: LlamaContext) -> None:
        """Read the scored prompt rows of the last decode into the sequence's prompt log-probabilities."""
        scored = sequence.prompt_logprobs
        num_top = sequence.logprobs.num_top if sequence.logprobs is not None else 0
        pieces = self._model.pieces
        for row, index in sequence.prompt_rows:
            if scored is not None:
                row_logprobs = log_softmax(context.logits(row))
                scored[index] = token_logprob(row_logprobs, sequence.prompt[index], num_top, pieces)
        sequence.prompt_rows.clear()

    def fail_running(self, context: LlamaContext, message: str) -> None:
        """Fail every running sequence (a decode error); their slots are wiped, not kept for reuse."""
        for sequence in list(self.running):
            slot = sequence.slot
            self._release(sequence)
            if slot is not None:
                context.forget(slot.seq_id)
                slot.tokens.clear()
            sequence.send(sequence.finish_event("", FinishReason.ERROR, message))

    def fail_all(self, context: LlamaContext, message: str) -> None:
        self.fail_running(context, message)
        while self.waiting:
            sequence = self.waiting.popleft()
            sequence.send(sequence.finish_event("", FinishReason.ERROR, message))

    def _advance(self, sequence: Sequence, token: int) -> None:
        if self._model.is_end_of_generation(token):
            if sequence.pending_logprobs and sequence.pending_logprobs[-1].token == token:
                sequence.pending_logprobs.pop()  # the end of turn is not reply text: it is not reported
            self._finish(sequence, sequence.text.flush(), FinishReason.STOP)
            return
        tokens = [token]
        guide = sequence.guide
        if guide is not None:
            try:
                forced = guide.accept(token, max_forced=sequence.max_new_tokens - sequence.num_generated)
            except GrammarViolation as exc:
                self._fail_guide(sequence, exc)
                return
            sequence.num_generated += len(forced)
            tokens.extend(forced)
        pieces = self._model.pieces
        data = pieces[token] if len(tokens) == 1 else b"".join(pieces[t] for t in tokens)
        if guide is not None and guide.starts_tool_call(data):
            sequence.text.disable_stops()  # stop strings cut text replies, never a call (it ends with its array)
        text, hit_stop = sequence.text.push(data)
        if hit_stop:
            self._finish(sequence, text, FinishReason.STOP)
        elif guide is not None and guide.is_done:
            self._finish(sequence, text + sequence.text.flush(), FinishReason.STOP)
        elif sequence.num_generated >= sequence.max_new_tokens:
            self._finish(sequence, text + sequence.text.flush(), FinishReason.LENGTH)
        else:
            sequence.pending = tokens
            if text:
                is_call = guide is not None and guide.reader.push(text)
                sequence.send(GenerationEvent(text, len(sequence.prompt), sequence.num_generated, is_tool_call=is_call))

    def _finish(self, sequence: Sequence, text: str, reason: FinishReason) -> None:
        self._release(sequence)
        event = sequence.finish_event(text, reason)
        sequence.send(event if sequence.guide is None else sequence.guide.final_event(event))

    def _fail_guide(self, sequence: Sequence, error: GrammarViolation) -> None:
        assert sequence.guide is not None  # only guided sequences have a grammar to fail
        self._release(sequence)
        sequence.send(sequence.guide.error_event(sequence.finish_event("", FinishReason.ERROR), error))

    def _assign(
        self, sequence: Sequence, slot: Slot, context: LlamaContext, source: Slot | None = None, copy_cost: int = 0
    ) -> None:
        """Give `slot` to `sequence`, keeping the longest reusable prefix of the slot's own KV, or of
        `source`'s (another slot holding a prefix of this prompt) when that reuses more than `copy_cost`
        tokens beyond it."""
        # Keep at least one prompt token to decode: its logits give the first generated token. A scored
        # prompt decodes its whole scored span: each of its rows gives the next token's log-probability.
        last = len(sequence.prompt) - 1
        if sequence.scored_from is not None:
            last = min(last, sequence.scored_from - 1)
            if sequence.prompt_logprobs is None:
                pieces = self._model.pieces
                sequence.prompt_logprobs = [TokenLogprob(token, pieces[token], None) for token in sequence.prompt]
        reused = self._usable_prefix(context, slot, min(_common_prefix(slot.tokens, sequence.prompt), last))
        if source is not None and source is not slot:
            copied = self._usable_prefix(context, source, min(_common_prefix(source.tokens, sequence.prompt), last))
            if copied - copy_cost > reused:
                context.copy(source.seq_id, slot.seq_id)
                slot.tokens[:] = source.tokens
                reused = copied
        if not context.forget(slot.seq_id, reused):
            context.forget(slot.seq_id)
            reused = 0
        del slot.tokens[reused:]
        sequence.num_prefilled = reused
        sequence.num_cached = reused
        sequence.slot = slot
        sequence.last_slot = slot
        slot.sequence = sequence
        self.running.append(sequence)

    def _usable_prefix(self, context: LlamaContext, slot: Slot, length: int) -> int:
        """`length` if the slot's KV can continue from there, else 0 (prefill from scratch).

        With sliding-window attention (Gemma 3) the window layers keep only recent positions; the token at
        `length` needs the `num_swa` positions before it. llama.cpp's server applies the same rule.
        """
        window = self._model.num_swa
        if length == 0 or window == 0:
            return length
        return length if context.first_position(slot.seq_id) <= max(0, length - window) else 0

    def _append(self, sequence: Sequence, tokens: list[int], context: LlamaContext, *, wants_logits: bool) -> None:
        slot = sequence.slot
        assert slot is not None  # running sequences always hold a slot
        start = len(slot.tokens)
        outputs_from = self._scored_rows(sequence, start, len(tokens), context.num_tokens)
        row = context.add(tokens, start, slot.seq_id, wants_logits=wants_logits, outputs_from=outputs_from)
        slot.tokens.extend(tokens)
        if wants_logits:
            sequence.logits_row = row

    def _release(self, sequence: Sequence) -> None:
        """Free the slot at once; it keeps its KV and tokens so a later prompt can reuse the prefix."""
        slot = sequence.slot
        if slot is not None:
            slot.sequence = None
            slot.last_used = time.monotonic()
            sequence.slot = None
        sequence.logits_row = -1
        sequence.prompt_rows.clear()
        self.running.remove(sequence)


# A prefix this much longer is worth leaving a hole in the busy slot ids, which costs an extra forward pass
# per step until it is filled: at ~250 prompt tokens/s against ~10 ms per extra pass, 64 tokens of
# prefill cost about as much as 25 decode steps.
PREFIX_WORTH_A_GAP = 64
# What copying another slot's prefix costs, in tokens of prefill: between per-slot KV streams llama.cpp
# copies a whole stream (context_length cells of every layer, about 94 MB for SmolLM2 at 4,096 tokens).
PREFIX_WORTH_A_COPY = 32


def _pick_slot(
    slots: list[Slot], free: list[Slot], prompt: list[int], source: Slot | None, copy_cost: int = 0
) -> Slot:
    """The free slot for `prompt`: the prefix it reuses, minus the holes it leaves among the busy ids.

    Ties go to the slot holding the prefix itself, then to the least recently used slot (its cached prefix
    is the least likely to be wanted again), then to the lowest id. A `source` slot's prefix can be copied
    into any slot, less `copy_cost` (what the copy costs, counted in tokens of prefill).
    """
    busy = [slot.seq_id for slot in slots if slot.sequence is not None]
    shared = _common_prefix(source.tokens, prompt) if source is not None else 0

    def score(slot: Slot) -> tuple[int, int, float, int]:
        own = _common_prefix(slot.tokens, prompt)
        prefix = max(own, shared - copy_cost)
        ids = [*busy, slot.seq_id]
        holes = max(ids) - min(ids) + 1 - len(ids)
        # Among equals, the slot that holds the prefix itself: no copy, and no other slot's cache overwritten.
        return prefix - PREFIX_WORTH_A_GAP * holes, own, -slot.last_used, -slot.seq_id

    return max(free, key=score)


def _prefix_holder(slots: list[Slot], prompt: list[int]) -> Slot | None:
    """The slot, busy or free, holding the longest prefix of `prompt`, when it is worth a copy."""
    length, best = max(((_common_prefix(slot.tokens, prompt), slot) for slot in slots), key=lambda pair: pair[0])
    return best if length > PREFIX_WORTH_A_COPY else None


def _seq_id(sequence: Sequence) -> int:
    assert sequence.slot is not None  # rows are only built for running sequences, which hold a slot
    return sequence.slot.seq_id


def _common_prefix(cached: list[int], prompt: list[int]) -> int:
    """How many leading tokens two token lists share."""
    limit = min(len(cached), len(prompt))
    if limit == 0 or cached[0] != prompt[0]:
        return 0
    if cached[:limit] == prompt[:limit]:
        return limit
    low, high = 1, limit  # cached[:low] == prompt[:low] holds; find the first mismatch by bisection
    while high - low > 1:
        middle = (low + high) // 2
        if cached[:middle] == prompt[:middle]:
            low = middle
        else:
            high = middle
    return low
