"""GPU placement reaches llama.cpp's model parameters; a CPU-only build loads the model all the same."""

from __future__ import annotations

import llama_cpp as ll

from galerne.catalog import default_catalog
from galerne.engines.llamacpp.model import GpuPlacement, LlamaModel


def test_the_placement_sets_llama_cpps_model_parameters() -> None:
    params = ll.llama_model_default_params()
    shares = GpuPlacement(gpu_layers=-1, split_mode="row", main_gpu=1, tensor_split=(3.0, 1.0)).apply(params)
    assert (params.n_gpu_layers, params.split_mode, params.main_gpu) == (-1, 2, 1)
    assert shares is not None and (params.tensor_split[0], params.tensor_split[1]) == (3.0, 1.0)
    cpu = ll.llama_model_default_params()
    assert GpuPlacement().apply(cpu) is None and (cpu.n_gpu_layers, cpu.split_mode) == (0, 1)


def test_a_model_loads_with_layers_asked_on_gpus_on_a_cpu_only_build() -> None:
    path = default_catalog().default_entry().gguf_path()
    model = LlamaModel(path, GpuPlacement(gpu_layers=-1, split_mode="none", tensor_split=(1.0,)))
    try:
        assert model.num_vocab == 49152 and model.tokenize("Hello", parse_special=False)
    finally:
        model.close()
