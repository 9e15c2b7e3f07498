"""`python -m tests.faulty_server serve ...`: the real `galerne serve` with one bug planted, on purpose.

The remote engine raises a plain `RuntimeError` right after the first event of each streamed reply, as a
bug would. Nothing is replaced: the server, the engine and the upstream stay real; this only proves that an
exception nobody planned for still ends a stream properly (an error event, then `[DONE]`) and is logged once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from galerne.cli import app
from galerne.engines.remote import RemoteGeneration
from galerne.inference.types import GenerationEvent

PLANTED = "planted fault: a bug after the first event"
_streamed_events = RemoteGeneration._streamed_events


async def _buggy_streamed_events(
    self: RemoteGeneration, response: aiohttp.ClientResponse
) -> AsyncIterator[GenerationEvent]:
    async for event in _streamed_events(self, response):
        yield event
        raise RuntimeError(PLANTED)


RemoteGeneration._streamed_events = _buggy_streamed_events  # type: ignore[method-assign]

if __name__ == "__main__":
    app()
