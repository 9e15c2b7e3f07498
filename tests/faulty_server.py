"""`python -m tests.faulty_server serve ...`: the real `galerne serve` with one bug planted, on purpose.

The remote engine raises a plain `RuntimeError` right after the first event of each reply, as a bug would.
Nothing is replaced: the server, the engine and the upstream stay real; this only proves that an exception
nobody planned for still gets a proper end — a 500 in la Plateforme's body, or an error event then `[DONE]`
in a stream — and is logged once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from galerne.cli import app
from galerne.engines.remote import RemoteGeneration
from galerne.inference.types import GenerationEvent

PLANTED = "planted fault: a bug after the first event"
_events = RemoteGeneration.events


async def _buggy_events(self: RemoteGeneration) -> AsyncIterator[GenerationEvent]:
    async for event in _events(self):
        yield event
        raise RuntimeError(PLANTED)


if __name__ == "__main__":
    # Planted only in the server process: importing this module (for PLANTED) must not break other tests.
    RemoteGeneration.events = _buggy_events  # type: ignore[method-assign]
    app()
