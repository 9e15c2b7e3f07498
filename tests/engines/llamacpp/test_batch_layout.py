"""The batch layout: rows in slot order and busy slots kept contiguous, so decode rows cost one forward pass.

llama.cpp runs a batch for per-slot KV streams as micro-batches (`llama_batch_allocr::split_equal` with
`sequential = true`): each takes an equal number of tokens from a run of sequence ids found in batch
order, each id exactly one above the last. `forward_passes` replays that rule, so these tests see what
llama.cpp will do with the batches the real scheduler builds over a real context and the real model.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from galerne.engines.llamacpp.context import ContextShape, LlamaContext
from galerne.engines.llamacpp.model import LlamaModel
from galerne.engines.llamacpp.sampler import TokenSampler
from galerne.engines.llamacpp.scheduler import (
    PREFIX_WORTH_A_COPY,
    PREFIX_WORTH_A_GAP,
    Scheduler,
    Sequence,
    Slot,
    _pick_slot,
    _prefix_holder,
)
from galerne.engines.llamacpp.text import TextAssembler
from galerne.inference.types import GenerationEvent, SamplingParams
from tests.conftest import engine_threads

NUM_SLOTS = 8
MAX_BATCH_TOKENS = 64
LENGTHS = (3, 7, 2, 5, 9, 4, 6, 8)
TOPICS = ("Birds of Europe", "Rivers", "Mountains of Asia", "Painters", "Birds of Africa", "Old bridges")


def forward_passes(row_seq_ids: list[int], max_ubatch: int) -> list[list[int]]:
    """The row indices of each micro-batch llama.cpp makes of a batch, in order (see the module doc)."""
    used = [False] * len(row_seq_ids)
    passes: list[list[int]] = []
    while not all(used):
        members: list[int] = []
        for index, seq_id in enumerate(row_seq_ids):
            if used[index] or seq_id in members:
                continue
            if not members or seq_id == members[-1] + 1:
                members.append(seq_id)
        rows = {seq_id: [i for i, s in enumerate(row_seq_ids) if s == seq_id and not used[i]] for seq_id in members}
        taken = 0
        while all(taken < len(rows[seq_id]) for seq_id in members):
            taken += 1
            if (taken + 1) * len(members) > max_ubatch:
                break
        chosen = [row for seq_id in members for row in rows[seq_id][:taken]]
        for row in chosen:
            used[row] = True
        passes.append(chosen)
    return passes


def _num_runs(seq_ids: set[int]) -> int:
    """Runs of consecutive ids: the fewest passes one decode token per id can take."""
    return sum(1 for seq_id in seq_ids if seq_id - 1 not in seq_ids)


def test_forward_passes_replays_the_split_rule() -> None:
    assert len(forward_passes([0, 1, 2, 3], 64)) == 1
    assert len(forward_passes([3, 2, 1, 0], 64)) == 4
    assert len(forward_passes([0, 2, 1, 3], 64)) == 2  # {0, 1}, then {2, 3}
    assert len(forward_passes([0, 1, 3, 4], 64)) == 2  # a gap in the ids
    assert forward_passes([0, 1, 1, 1, 2], 64) == [[0, 1, 4], [2, 3]]  # a prefill chunk: equal tokens first


class RecordingContext(LlamaContext):
    """The real context, remembering the sequence id of every row of the batch being built."""

    def __init__(self, model: LlamaModel, shape: ContextShape) -> None:
        super().__init__(model, shape)
        self.row_seq_ids: list[int] = []
        self.decode_rows: list[int] = []

    def add(
        self, tokens: list[int], start: int, seq_id: int, *, wants_logits: bool, outputs_from: int | None = None
    ) -> int:
        first = self.num_tokens
        row = super().add(tokens, start, seq_id, wants_logits=wants_logits, outputs_from=outputs_from)
        self.row_seq_ids += [seq_id] * len(tokens)
        if len(tokens) == 1 and start > 0 and wants_logits:
            self.decode_rows.append(first)
        return row

    def decode(self) -> None:
        super().decode()
        self.row_seq_ids, self.decode_rows = [], []


@pytest.fixture
def context(model: LlamaModel) -> Iterator[RecordingContext]:
    shape = ContextShape(
        num_slots=NUM_SLOTS, context_length=256, max_batch_tokens=MAX_BATCH_TOKENS, num_threads=engine_threads()
    )
    made = RecordingContext(model, shape)
    yield made
    made.close()


def _sequence(model: LlamaModel, text: str, max_new_tokens: int, events: list[GenerationEvent]) -> Sequence:
    prompt = model.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n", parse_special=True)
    return Sequence(
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        sampler=TokenSampler(SamplingParams(temperature=0.0)),
        text=TextAssembler(()),
        emit=events.append,
    )


def test_decode_rows_run_in_one_pass_while_requests_come_and_go(model: LlamaModel, context: RecordingContext) -> None:
    """20 requests of different lengths through 8 slots: finished ones leave gaps that new ones fill."""
    scheduler = Scheduler(model, NUM_SLOTS)
    events: list[GenerationEvent] = []
    for index in range(20):
        scheduler.add(_sequence(model, f"Tell me fact number {index} about owls.", LENGTHS[index % 8], events))
    steps_while_full: list[int] = []  # decode passes of each step taken while requests were still queued
    while scheduler.has_work:
        scheduler.drop_cancelled()
        scheduler.admit(context)
        is_full = bool(scheduler.waiting)
        if not scheduler.schedule(context):
            break
        passes = forward_passes(context.row_seq_ids, MAX_BATCH_TOKENS)
        decode_passes = {i for i, rows in enumerate(passes) for row in rows if row in context.decode_rows}
        decoding = {context.row_seq_ids[row] for row in context.decode_rows}
        assert len(decode_passes) <= _num_runs(decoding), (
            f"decode rows of slots {sorted(decoding)} take {len(decode_passes)} passes in batch order "
            f"{context.row_seq_ids}"
        )
        if is_full and context.decode_rows:
            steps_while_full.append(len(decode_passes))
        context.decode()
        scheduler.postprocess(context)
    assert sum(event.finish_reason is not None for event in events) == 20
    # Every slot is busy while requests queue, and a gap left by a finished request is filled first.
    assert len(steps_while_full) > 5 and set(steps_while_full) == {1}, steps_while_full


def test_busy_slots_stay_contiguous_when_fewer_requests_run_than_there_are_slots(
    model: LlamaModel, context: RecordingContext
) -> None:
    """After a burst has used every slot, five requests at a time: each new one takes a slot that keeps
    the busy ids one run, rather than the least recently used one (which leaves gaps)."""
    scheduler = Scheduler(model, NUM_SLOTS)
    events: list[GenerationEvent] = []
    for index in range(NUM_SLOTS):
        scheduler.add(_sequence(model, f"{TOPICS[index % len(TOPICS)]}: say {index}.", 2 + index, events))
    while scheduler.has_work:
        scheduler.admit(context)
        scheduler.schedule(context)
        context.decode()
        scheduler.postprocess(context)
    events.clear()
    num_added = 0
    num_requests = 24
    decode_passes_per_step: list[int] = []
    while num_added < num_requests or scheduler.has_work:
        while num_added < num_requests and len(scheduler.running) + len(scheduler.waiting) < 5:
            topic = TOPICS[(num_added * 7) % len(TOPICS)]  # earlier prompts share prefixes in scattered slots
            scheduler.add(_sequence(model, f"{topic}: name {num_added} of them.", LENGTHS[num_added % 8], events))
            num_added += 1
        scheduler.admit(context)
        if not scheduler.schedule(context):
            break
        passes = forward_passes(context.row_seq_ids, MAX_BATCH_TOKENS)
        if context.decode_rows and num_added < num_requests:
            decode_passes = {i for i, rows in enumerate(passes) for row in rows if row in context.decode_rows}
            decode_passes_per_step.append(len(decode_passes))
        context.decode()
        scheduler.postprocess(context)
    assert sum(event.finish_reason is not None for event in events) == num_requests
    assert len(decode_passes_per_step) > 10 and set(decode_passes_per_step) == {1}, decode_passes_per_step


def _slot(seq_id: int, tokens: list[int], *, is_busy: bool = False, last_used: float = 0.0) -> Slot:
    slot = Slot(seq_id, list(tokens), last_used=last_used)
    if is_busy:
        slot.sequence = object()  # type: ignore[assignment]
    return slot


def test_a_new_request_fills_the_gap_between_busy_slots() -> None:
    slots = [_slot(0, [], is_busy=True), _slot(1, [1, 2, 3]), _slot(2, [], is_busy=True), _slot(3, [1, 2, 3, 4])]
    free = [slot for slot in slots if slot.sequence is None]
    assert _pick_slot(slots, free, [1, 2, 3, 4, 5], None).seq_id == 1  # one token less of prefix, no gap


def test_a_long_enough_prefix_is_worth_a_gap() -> None:
    history = list(range(PREFIX_WORTH_A_GAP + 10))
    slots = [_slot(0, [], is_busy=True), _slot(1, []), _slot(2, history)]
    free = [slot for slot in slots if slot.sequence is None]
    assert _pick_slot(slots, free, [*history, 7], None).seq_id == 2
    short = history[: PREFIX_WORTH_A_GAP - 1]
    slots[2].tokens = short
    assert _pick_slot(slots, free, [*short, 7], None).seq_id == 1


def test_among_equal_slots_the_least_recently_used_cache_is_overwritten() -> None:
    slots = [_slot(0, [5, 6], last_used=2.0), _slot(1, [8, 9], last_used=1.0)]
    assert _pick_slot(slots, slots, [1, 2], None).seq_id == 1


def test_a_prompt_another_slot_holds_is_copied_into_the_slot_that_keeps_ids_contiguous() -> None:
    prompt = list(range(200))
    source = _slot(0, prompt, is_busy=True)
    slots = [source, _slot(1, []), _slot(2, []), _slot(3, prompt[:100])]
    assert _pick_slot(slots, slots[1:], prompt, source).seq_id == 1


def test_a_prefix_held_by_any_slot_is_a_copy_source_when_it_saves_more_than_the_copy_costs() -> None:
    prompt = list(range(200))
    holder = _slot(2, prompt[: PREFIX_WORTH_A_COPY + 1], is_busy=True)
    slots = [_slot(0, prompt[:5]), _slot(1, []), holder, _slot(3, prompt[:PREFIX_WORTH_A_COPY])]
    assert _prefix_holder(slots, prompt) is holder
    holder.tokens = prompt[:PREFIX_WORTH_A_COPY]
    assert _prefix_holder(slots, prompt) is None


def test_a_free_holder_is_preferred_to_copying_its_prefix_elsewhere() -> None:
    prompt = list(range(200))
    slots = [_slot(0, [], last_used=1.0), _slot(1, prompt[:100], last_used=2.0)]
    assert _pick_slot(slots, slots, prompt, slots[1], PREFIX_WORTH_A_COPY).seq_id == 1


def test_a_copy_counts_its_cost_against_a_slot_that_has_most_of_the_prefix_itself() -> None:
    prompt = list(range(200))
    holder = _slot(1, prompt[:100], is_busy=True)
    own_most, empty = _slot(0, prompt[:90], last_used=1.0), _slot(2, [], last_used=0.0)
    slots = [own_most, holder, empty]
    # 90 kept beats 100 copied less the copy's cost, though the empty slot is the least recently used.
    assert _pick_slot(slots, [own_most, empty], prompt, holder, PREFIX_WORTH_A_COPY) is own_most
