"""A loaded GGUF model: weights, vocabulary, tokenizer and the facts the scheduler needs.

Wraps the few llama.cpp calls that take a model or a vocabulary, so the scheduler never handles
ctypes buffers for text. Token pieces are decoded once at load into a table: the hot loop then turns
a token into bytes with a list lookup instead of a C call.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as ll

from galerne.errors import ConfigurationError

logger = logging.getLogger(__name__)

_backend_ready = False
_LLAMA_LOG_ERROR = 4


def _log_llama_errors(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """llama.cpp prints thousands of lines per model load; keep only its errors, in our log."""
    if level == _LLAMA_LOG_ERROR and text:
        logger.error("llama.cpp: %s", text.decode("utf-8", errors="replace").rstrip())


_forward_llama_log = ll.llama_log_callback(_log_llama_errors)  # kept referenced: llama.cpp holds the pointer


def _init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        ll.llama_log_set(_forward_llama_log, ctypes.c_void_p(0))
        ll.llama_backend_init()
        _backend_ready = True


_SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}  # llama_split_mode: LLAMA_SPLIT_MODE_NONE, _LAYER, _ROW


@dataclass(frozen=True, slots=True)
class GpuPlacement:
    """Where llama.cpp puts the weights: `gpu_layers` layers on GPUs (-1: all; 0: CPU only, the default),
    spread by `split_mode` in the proportions of `tensor_split`, or all on `main_gpu` with split mode "none".
    A build of llama-cpp-python without CUDA ignores them (docs/scale-out.md says how to build one with it)."""

    gpu_layers: int = 0
    split_mode: str = "layer"
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()

    def apply(self, params: ll.llama_model_params) -> ctypes.Array[ctypes.c_float] | None:
        """Set `params`; returns the tensor-split array, which must outlive the load (llama.cpp keeps a pointer)."""
        params.n_gpu_layers = self.gpu_layers  # llama.cpp's own convention: -1 is every layer
        params.split_mode = _SPLIT_MODES[self.split_mode]
        params.main_gpu = self.main_gpu
        if not self.tensor_split:
            return None
        shares = (ctypes.c_float * len(self.tensor_split))(*self.tensor_split)
        params.tensor_split = shares  # ctypes passes the array as the float pointer the field is
        return shares


@dataclass(frozen=True, slots=True)
class FimTokens:
    prefix: int
    suffix: int
    middle: int


class LlamaModel:
    """Owns a `llama_model` and its vocabulary; safe to tokenize from any thread (read-only vocab)."""

    def __init__(self, path: Path, placement: GpuPlacement | None = None) -> None:
        _init_backend()
        params = ll.llama_model_default_params()
        shares = (placement or GpuPlacement()).apply(params)
        self.path = path
        self.handle = ll.llama_model_load_from_file(str(path).encode(), params)
        del shares  # llama.cpp has copied the split by now
        if not self.handle:
            raise ConfigurationError(f"llama.cpp could not load the GGUF file {path}; is it a complete model?")
        self.vocab = ll.llama_model_get_vocab(self.handle)
        self.num_vocab = int(ll.llama_vocab_n_tokens(self.vocab))
        self.context_length_trained = int(ll.llama_model_n_ctx_train(self.handle))
        # Sliding-window size of the local attention layers (Gemma 3: 512); 0 when every layer sees everything.
        self.num_swa = max(0, int(ll.llama_model_n_swa(self.handle)))
        self.pieces = [self._piece(token) for token in range(self.num_vocab)]
        self._is_eog = [bool(ll.llama_vocab_is_eog(self.vocab, token)) for token in range(self.num_vocab)]
        self.adds_bos = bool(ll.llama_vocab_get_add_bos(self.vocab))
        self.bos_token = self._special_text(int(ll.llama_vocab_bos(self.vocab)))
        self.eos_token = self._special_text(int(ll.llama_vocab_eos(self.vocab)))
        self.bos_token_id = int(ll.llama_vocab_bos(self.vocab))
        self.eos_token_id = int(ll.llama_vocab_eos(self.vocab))
        self.fim_tokens = self._fim_tokens()

    def _fim_tokens(self) -> FimTokens | None:
        """The prefix/suffix/middle tokens, as llama.cpp finds them (GGUF metadata, or well-known token texts
        such as `<fim_prefix>` or `<|fim_prefix|>`); None unless the vocabulary has all three."""
        found = (
            int(ll.llama_vocab_fim_pre(self.vocab)),
            int(ll.llama_vocab_fim_suf(self.vocab)),
            int(ll.llama_vocab_fim_mid(self.vocab)),
        )
        if any(token < 0 or token >= self.num_vocab for token in found):
            return None
        return FimTokens(*found)

    def chat_template(self) -> str | None:
        """The Jinja chat template stored in the GGUF metadata, if the model ships one."""
        raw = ll.llama_model_chat_template(self.handle, None)
        return raw.decode("utf-8") if raw else None

    def tokenize(self, text: str, *, parse_special: bool, add_bos: bool = False) -> list[int]:
        """Tokens of `text`; `parse_special=False` keeps control tokens out of user-supplied text."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buffer = (ll.llama_token * capacity)()
        count = ll.llama_tokenize(self.vocab, data, len(data), buffer, capacity, add_bos, parse_special)
        if count < 0:
            capacity = -count
            buffer = (ll.llama_token * capacity)()
            count = ll.llama_tokenize(self.vocab, data, len(data), buffer, capacity, add_bos, parse_special)
        return list(buffer[:count])

    def is_end_of_generation(self, token: int) -> bool:
        return self._is_eog[token]

    @property
    def end_of_generation_tokens(self) -> list[int]:
        return [token for token, is_eog in enumerate(self._is_eog) if is_eog]

    def mark_end_of_generation(self, token: int) -> None:
        """Make `token` end replies too (a catalogue stop token the GGUF does not flag as end-of-generation)."""
        self._is_eog[token] = True

    def close(self) -> None:
        if self.handle:
            ll.llama_model_free(self.handle)
            self.handle = None

    def _piece(self, token: int, *, special: bool = False) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        length = ll.llama_token_to_piece(self.vocab, token, buffer, 64, 0, special)
        if length < 0:
            buffer = ctypes.create_string_buffer(-length)
            length = ll.llama_token_to_piece(self.vocab, token, buffer, -length, 0, special)
        return buffer.raw[:length]

    def special_piece(self, token: int) -> bytes:
        """A token's bytes with control tokens spelled out (``<end_of_turn>``), as templates write them."""
        return self._piece(token, special=True)

    def _special_text(self, token: int) -> str:
        if token < 0 or token >= self.num_vocab:
            return ""
        return self._piece(token, special=True).decode("utf-8", errors="replace")
