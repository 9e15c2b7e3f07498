"""Galerne's grammar tokenizer is llguidance's own, built from the pieces the model already holds."""

from __future__ import annotations

import warnings

import llguidance.llamacpp

from galerne.engines.llamacpp.lltokenizer import grammar_tokenizer
from galerne.engines.llamacpp.model import LlamaModel


def test_the_grammar_tokenizer_matches_llguidances_for_every_token(model: LlamaModel) -> None:
    ours = grammar_tokenizer(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        theirs = llguidance.llamacpp.lltokenizer_from_vocab(model.vocab)
    assert ours.vocab_size == theirs.vocab_size == model.num_vocab
    assert ours.eos_token == theirs.eos_token
    every = list(range(model.num_vocab))
    assert [ours.decode_bytes([t]) for t in every] == [theirs.decode_bytes([t]) for t in every]
    assert ours.tokenize_str("Hello <|im_end|> wörld") == theirs.tokenize_str("Hello <|im_end|> wörld")
