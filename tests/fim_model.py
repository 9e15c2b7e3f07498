"""A copy of the bundled SmolLM2 GGUF whose vocabulary has fill-in-the-middle tokens.

Neither bundled model has FIM tokens, so the positive path of `/v1/fim/completions` is tested on a copy
in which three unused control tokens are renamed `<fim_prefix>`, `<fim_suffix>` and `<fim_middle>` —
the names llama.cpp recognises (as in Granite and StarCoder vocabularies). Written with the `gguf`
package, as llama.cpp's own `gguf_new_metadata.py` copies a model: every key and tensor as it is.
The model was never trained on them, so what it writes between prefix and suffix is not meaningful;
the test checks the plumbing (detection, prompt layout, the reply's shape), not the quality.
"""

from __future__ import annotations

from pathlib import Path

import gguf

FIM_NAMES = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")
# Control tokens of SmolLM2's vocabulary that neither its chat template nor ordinary text produces.
RENAMED = ("<repo_name>", "<file_sep>", "<filename>")
TOKENS_KEY = "tokenizer.ggml.tokens"


def write_fim_copy(source: Path, target: Path) -> Path:
    """Copy `source` to `target` with three control tokens renamed to FIM tokens; returns `target`."""
    reader = gguf.GGUFReader(source)
    architecture = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(target, arch=architecture, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == TOKENS_KEY:
            value = [FIM_NAMES[RENAMED.index(token)] if token in RENAMED else token for token in value]
            missing = [name for name in FIM_NAMES if name not in value]
            if missing:
                raise RuntimeError(f"{source.name} has none of {RENAMED} to rename; pick other control tokens")
        writer.add_key_value(field.name, value, value_type, sub_type=sub_type)
    for tensor in reader.tensors:
        data = tensor.data
        writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data)
    writer.close()
    return target
