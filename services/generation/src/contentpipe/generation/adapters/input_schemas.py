"""Models' input schemas, fetched once per model version and shared by concurrent generations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from contentpipe.generation.domain.model_input import InputSchema

UNAVAILABLE_RETRY_SECONDS = 60.0


class InputSchemaCache:
    """One fetch per key at a time; a schema is kept for good, a failed fetch is retried after a minute (the
    input is then coerced without it: integral floats become ints)."""

    def __init__(self, retry_seconds: float = UNAVAILABLE_RETRY_SECONDS) -> None:
        self._retry_seconds = retry_seconds
        self._known: dict[str, InputSchema] = {}
        self._unavailable_until: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str, fetch: Callable[[], Awaitable[InputSchema | None]]) -> InputSchema | None:
        if (known := self._known.get(key)) is not None:
            return known
        async with self._locks.setdefault(key, asyncio.Lock()):
            if (known := self._known.get(key)) is not None:
                return known
            if time.monotonic() < self._unavailable_until.get(key, 0.0):
                return None
            schema = await fetch()
            if schema is None:
                self._unavailable_until[key] = time.monotonic() + self._retry_seconds
            else:
                self._known[key] = schema
            return schema
