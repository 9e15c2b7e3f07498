"""llguidance's tokenizer for a loaded model, built from the token pieces the model already decoded.

`llguidance.llamacpp.lltokenizer_from_vocab` asks llama.cpp for every piece again and calls a binding that
llama-cpp-python 0.3.36 deprecates, so each of its calls also raises a warning: for Gemma's 262,144 tokens
that took about 12 s of Python holding the GIL. `LlamaModel` has every piece already; only control tokens
need their text (llguidance marks them with a 0xFF prefix so that no grammar can spell them out).
"""

from __future__ import annotations

import ctypes

import llama_cpp as ll
from llguidance import LLTokenizer

from galerne.engines.llamacpp.model import LlamaModel

_CONTROL = int(ll.LLAMA_TOKEN_ATTR_CONTROL)
_SPELLED_ONLY_WHEN_SPECIAL = _CONTROL | int(ll.LLAMA_TOKEN_ATTR_UNKNOWN)


def grammar_tokenizer(model: LlamaModel) -> LLTokenizer:
    """The tokenizer llguidance masks with; tokenizes through llama.cpp's own `llama_tokenize`."""
    tokens = list(model.pieces)
    for token in range(model.num_vocab):
        attributes = int(ll.llama_vocab_get_attr(model.vocab, token))
        if attributes & _SPELLED_ONLY_WHEN_SPECIAL:
            tokens[token] = (b"\xff" if attributes & _CONTROL else b"") + model.special_piece(token)
    tokenize = ctypes.cast(ll.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    built: LLTokenizer = LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
        tokens=tokens,
        vocab_ptr=model.vocab,
        tokenize_fptr=tokenize,
        eos_token=int(ll.llama_vocab_eos(model.vocab)),
        slices=None,
    )
    return built
