"""A loaded GGUF model: weights, vocabulary, tokenizer and the facts the scheduler needs.

Wraps the few llama.cpp calls that take a model or a vocabulary, so the scheduler never handles
ctypes buffers for text. Token pieces are decoded once at load into a table: the hot loop then turns
a token into bytes with a list lookup instead of a C call.
"""

from __future__ import annotations

import ctypes
import logging
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


class LlamaModel:
    """Owns a `llama_model` and its vocabulary; safe to tokenize from any thread (read-only vocab)."""

    def __init__(self, path: Path) -> None:
        _init_backend()
        params = ll.llama_model_default_params()
        self.path = path
        self.handle = ll.llama_model_load_from_file(str(path).encode(), params)
        if not self.handle:
            raise ConfigurationError(f"llama.cpp could not load the GGUF file {path}; is it a complete model?")
        self.vocab = ll.llama_model_get_vocab(self.handle)
        self.num_vocab = int(ll.llama_vocab_n_tokens(self.vocab))
        self.context_length_trained = int(ll.llama_model_n_ctx_train(self.handle))
        self.pieces = [self._piece(token) for token in range(self.num_vocab)]
        self._is_eog = [bool(ll.llama_vocab_is_eog(self.vocab, token)) for token in range(self.num_vocab)]
        self.adds_bos = bool(ll.llama_vocab_get_add_bos(self.vocab))
        self.bos_token = self._special_text(int(ll.llama_vocab_bos(self.vocab)))
        self.eos_token = self._special_text(int(ll.llama_vocab_eos(self.vocab)))

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

    def _special_text(self, token: int) -> str:
        if token < 0 or token >= self.num_vocab:
            return ""
        return self._piece(token, special=True).decode("utf-8", errors="replace")
