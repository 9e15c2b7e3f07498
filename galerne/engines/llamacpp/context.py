"""One `llama_context` with one reusable `llama_batch`: the only place that calls `llama_decode`.

Used by the engine thread alone (llama.cpp contexts are not thread-safe). Each slot is a sequence id
with its own KV stream (`kv_unified=False`): a token attends only to its own sequence, so eight
short chats cost eight short attentions, not one long one.
"""

from __future__ import annotations

from dataclasses import dataclass

import llama_cpp as ll
import numpy as np
import numpy.typing as npt

from galerne.engines.llamacpp.model import LlamaModel
from galerne.errors import ConfigurationError


class DecodeError(RuntimeError):
    """`llama_decode` refused the batch; every sequence in it has to be failed."""


@dataclass(frozen=True, slots=True)
class ContextShape:
    num_slots: int
    context_length: int
    max_batch_tokens: int
    num_threads: int
    # Sliding-window models (Gemma 3): False keeps only the window (+ one batch) of KV in their local layers,
    # a fraction of the memory; the scheduler then reuses a cached prefix only where the window still holds it.
    swa_full: bool = False


class LlamaContext:
    """A batch being filled token by token, decoded in one call, then read logits row by row."""

    def __init__(self, model: LlamaModel, shape: ContextShape) -> None:
        params = ll.llama_context_default_params()
        params.n_ctx = shape.context_length * shape.num_slots
        params.n_batch = shape.max_batch_tokens
        params.n_ubatch = shape.max_batch_tokens
        params.n_seq_max = shape.num_slots
        params.kv_unified = False
        params.n_threads = shape.num_threads
        params.n_threads_batch = shape.num_threads
        params.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.swa_full = shape.swa_full
        params.no_perf = True
        self.handle = ll.llama_init_from_model(model.handle, params)
        if not self.handle:
            raise ConfigurationError(
                f"llama.cpp could not create a context of {shape.num_slots} slots x {shape.context_length} "
                "tokens; lower num_slots or context_length in the catalogue"
            )
        self.capacity = shape.max_batch_tokens
        self._memory = ll.llama_get_memory(self.handle)
        self._batch = ll.llama_batch_init(self.capacity, 0, 1)
        self._tokens = np.ctypeslib.as_array(self._batch.token, shape=(self.capacity,))
        self._positions = np.ctypeslib.as_array(self._batch.pos, shape=(self.capacity,))
        self._wants_logits = np.ctypeslib.as_array(self._batch.logits, shape=(self.capacity,))
        np.ctypeslib.as_array(self._batch.n_seq_id, shape=(self.capacity,))[:] = 1
        self._seq_ids = self._batch.seq_id
        self._num_vocab = model.num_vocab
        self.num_tokens = 0

    @property
    def space_left(self) -> int:
        return self.capacity - self.num_tokens

    def add(
        self, tokens: list[int], start: int, seq_id: int, *, wants_logits: bool, outputs_from: int | None = None
    ) -> int:
        """Append tokens of one sequence at positions start..; returns the batch row of the last one.

        `outputs_from` (an offset into `tokens`) also asks for the logits of every row from there on: a
        scored prompt needs them, and only over its scored span (each row costs a vocabulary of floats).
        """
        count = len(tokens)
        first = self.num_tokens
        end = first + count
        if end > self.capacity:
            raise ValueError("batch overflow: the scheduler must respect space_left")
        self._tokens[first:end] = tokens
        self._positions[first:end] = np.arange(start, start + count, dtype=np.int32)
        self._wants_logits[first:end] = 0
        if outputs_from is not None and outputs_from < count:
            self._wants_logits[first + outputs_from : end] = 1
        if wants_logits:
            self._wants_logits[end - 1] = 1
        seq_ids = self._seq_ids
        for row in range(first, end):
            seq_ids[row][0] = seq_id
        self.num_tokens = end
        return end - 1

    def decode(self) -> None:
        """Run the forward pass over everything added since the last decode (releases the GIL)."""
        self._batch.n_tokens = self.num_tokens
        result = ll.llama_decode(self.handle, self._batch)
        self.num_tokens = 0
        if result != 0:
            raise DecodeError(f"llama_decode returned {result}")

    def logits(self, row: int) -> npt.NDArray[np.float32]:
        """A writable view of the logits of batch row `row`, valid until the next decode."""
        pointer = ll.llama_get_logits_ith(self.handle, row)
        return np.ctypeslib.as_array(pointer, shape=(self._num_vocab,))

    def copy(self, source_seq_id: int, target_seq_id: int) -> None:
        """Make `target`'s KV a copy of `source`'s whole stream (its old content is dropped).

        Between per-slot streams llama.cpp copies only whole streams, and does it at the next decode,
        before that batch is computed; trim the copy with `forget` afterwards.
        """
        ll.llama_memory_seq_cp(self._memory, source_seq_id, target_seq_id, -1, -1)

    def first_position(self, seq_id: int) -> int:
        """The oldest position a slot's KV still holds (-1 when empty). With a sliding-window model the
        window layers drop positions older than the window, so a long-finished prefix may be gone there."""
        return int(ll.llama_memory_seq_pos_min(self._memory, seq_id))

    def forget(self, seq_id: int, from_position: int = 0) -> bool:
        """Drop a slot's KV from `from_position` on; False when llama.cpp cannot trim partially."""
        return bool(ll.llama_memory_seq_rm(self._memory, seq_id, from_position, -1))

    def close(self) -> None:
        if self.handle:
            ll.llama_batch_free(self._batch)
            ll.llama_free(self.handle)
            self.handle = None
