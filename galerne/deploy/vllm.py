"""The `vllm serve` command line Galerne launches: bound to loopback, with tools and structured outputs on.

vLLM's `--api-key` guards only some routes, so the server listens on 127.0.0.1 and only the gateway (on the
same host) reaches it; Galerne holds the keys, limits and metering. Tool calls need vLLM's
`--enable-auto-tool-choice` and a parser (`mistral` for Mistral models); `response_format` (json_object,
json_schema) maps to vLLM's own structured outputs with no flag. Across nodes, vLLM runs its workers on a Ray
cluster (`--distributed-executor-backend ray`, see docs/scale-out.md); the `vllm` package itself is never
imported by Galerne.

Example::

    vllm_command(VllmOptions(model="mistralai/Mistral-7B-Instruct-v0.3", tensor_parallel_size=2, port=8001))
    # ['vllm', 'serve', 'mistralai/Mistral-7B-Instruct-v0.3', '--host', '127.0.0.1', '--port', '8001', ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class VllmOptions:
    model: str
    port: int = 8001
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str | None = None  # "ray" across nodes; vLLM picks "mp" on one node
    served_model_name: str | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    tool_call_parser: str | None = "mistral"  # None: no tool calls (`tools` then need an engine that has them)
    mistral_format: bool = False  # Mistral's own checkpoint format and tokenizer (tokenizer_mode/config/load mistral)
    executable: str = "vllm"
    extra_args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"


def vllm_command(options: VllmOptions) -> list[str]:
    """The full command line, flag names as `vllm serve --help` spells them."""
    command = [options.executable, "serve", options.model, "--host", "127.0.0.1", "--port", str(options.port)]
    command += ["--tensor-parallel-size", str(options.tensor_parallel_size)]
    if options.pipeline_parallel_size > 1:
        command += ["--pipeline-parallel-size", str(options.pipeline_parallel_size)]
    if options.distributed_executor_backend:
        command += ["--distributed-executor-backend", options.distributed_executor_backend]
    if options.served_model_name:
        command += ["--served-model-name", options.served_model_name]
    if options.max_model_len:
        command += ["--max-model-len", str(options.max_model_len)]
    if options.gpu_memory_utilization:
        command += ["--gpu-memory-utilization", f"{options.gpu_memory_utilization:g}"]
    if options.tool_call_parser:
        command += ["--enable-auto-tool-choice", "--tool-call-parser", options.tool_call_parser]
    if options.mistral_format:
        command += ["--tokenizer-mode", "mistral", "--config-format", "mistral", "--load-format", "mistral"]
    return command + list(options.extra_args)


def catalogue_snippet(model_id: str, options: VllmOptions) -> str:
    """The catalogue deployment that routes to this server."""
    upstream = options.served_model_name or options.model
    return (
        f'[[models]]\nid = "{model_id}"\n\n[[models.deployments]]\nengine = "vllm"\n'
        f'base_url = "{options.base_url}"\nupstream_model = "{upstream}"\n'
    )
