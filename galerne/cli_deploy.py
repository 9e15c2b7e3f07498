"""`galerne deploy`: start an engine process on this host, wait until it is healthy, and keep it alive.

`deploy vllm` builds the real `vllm serve` command line (bound to 127.0.0.1; tensor and pipeline parallel;
Ray across nodes) and supervises it; `deploy process` supervises any OpenAI-compatible server given its
command line and health URL. Both run in the foreground until SIGTERM or Ctrl-C, which stop the child.

Example::

    galerne deploy vllm --model mistralai/Mistral-7B-Instruct-v0.3 --tensor-parallel-size 2 --port 8001
    galerne deploy vllm --model mistralai/Mixtral-8x7B-Instruct-v0.1 --tensor-parallel-size 8 \\
        --pipeline-parallel-size 2 --distributed-executor-backend ray --dry-run
    galerne deploy process --health-url http://127.0.0.1:8002/health -- llama-server -m m.gguf --port 8002
"""

from __future__ import annotations

import logging
import shlex
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from galerne.deploy.supervisor import ProcessSpec, Supervisor, SupervisorError
from galerne.deploy.vllm import VllmOptions, catalogue_snippet, vllm_command

deploy_app = typer.Typer(help="Start and supervise engine processes (vLLM, or any OpenAI-compatible server).")

LogOption = Annotated[Path | None, typer.Option("--log", help="Append the child's output to this file.")]
StartOption = Annotated[float, typer.Option("--start-seconds", help="How long it may take to become healthy.")]


@deploy_app.command("vllm")
def deploy_vllm(
    model: Annotated[str, typer.Option("--model", help="A Hugging Face model id or a local path.")],
    tensor_parallel_size: Annotated[int, typer.Option("--tensor-parallel-size", min=1)] = 1,
    pipeline_parallel_size: Annotated[int, typer.Option("--pipeline-parallel-size", min=1)] = 1,
    distributed_executor_backend: Annotated[
        str | None, typer.Option("--distributed-executor-backend", help="ray: workers on a Ray cluster (multi-node).")
    ] = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Its port on 127.0.0.1.")] = 8001,
    served_model_name: Annotated[str | None, typer.Option("--served-model-name")] = None,
    max_model_len: Annotated[int | None, typer.Option("--max-model-len", min=1)] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option("--gpu-memory-utilization", min=0.05, max=1.0)] = None,
    tool_call_parser: Annotated[
        str, typer.Option("--tool-call-parser", help="vLLM's tool parser; 'none' turns tool calls off.")
    ] = "mistral",
    mistral_format: Annotated[bool, typer.Option("--mistral-format", help="Mistral's checkpoint format.")] = False,
    vllm_executable: Annotated[str, typer.Option("--vllm", help="The vllm executable.")] = "vllm",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command line and the catalogue entry.")] = False,
    log: LogOption = None,
    start_seconds: StartOption = 1800.0,
) -> None:
    """Launch `vllm serve` on loopback, wait for its /health, restart it if it dies."""
    options = VllmOptions(
        model=model, port=port, tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size, distributed_executor_backend=distributed_executor_backend,
        served_model_name=served_model_name, max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization,
        tool_call_parser=None if tool_call_parser == "none" else tool_call_parser,
        mistral_format=mistral_format, executable=vllm_executable,
    )
    command = vllm_command(options)
    typer.echo(shlex.join(command))
    typer.echo("# catalogue entry:\n" + catalogue_snippet(served_model_name or model.rsplit("/", 1)[-1], options))
    if dry_run:
        return
    _supervise(ProcessSpec(command, options.health_url, log_path=log, start_seconds=start_seconds))


@deploy_app.command("process", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def deploy_process(
    context: typer.Context,
    health_url: Annotated[str, typer.Option("--health-url", help="Answers 200 once the server can serve.")],
    log: LogOption = None,
    start_seconds: StartOption = 600.0,
) -> None:
    """Supervise any OpenAI-compatible server: the command line comes after `--`."""
    if not context.args:
        typer.echo("error: give the server's command line after --", err=True)
        raise typer.Exit(code=2)
    _supervise(ProcessSpec(list(context.args), health_url, log_path=log, start_seconds=start_seconds))


def _supervise(spec: ProcessSpec) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    supervisor = Supervisor(spec)

    def stop(_signal: int, _frame: FrameType | None) -> None:
        supervisor.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        supervisor.start()
    except SupervisorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"healthy at {spec.health_url}; supervising pid {supervisor.pid} (Ctrl-C stops it)")
    supervisor.wait()
