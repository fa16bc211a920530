"""An async context manager over a resource's own `start()` and `stop()`.

For the processes a session owns (Xvfb, the game): `stop` runs however the block ends, and
also when `start` itself fails or is cancelled halfway, which is when a process can be
spawned and not yet watched, and would otherwise outlive its session.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Self


class Started:
    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> Any:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await asyncio.shield(self.stop())
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
