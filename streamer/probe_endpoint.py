"""Where players time round trips to this container before a claim (DESIGN.md step 3).

A tiny HTTP endpoint on the container's own host: `GET /probe` answers 204 at once, with CORS
so a page served by any indexer may fetch it and no caching so every probe reaches the host.
The page times a few fetches over one kept-alive connection and reports the median; the
container's reply time is part of what it measures, which is why a container can only look
farther than it is, never closer (indexer/coordinates.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

PROBE_PATH = "/probe"
_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Cache-Control": "no-store",
    "Timing-Allow-Origin": "*",  # lets the page read Resource Timing for the fetch
}


async def _answer(_: web.Request) -> web.Response:
    return web.Response(status=204, headers=_HEADERS)


@contextlib.asynccontextmanager
async def probe_endpoint(host: str, port: int = 0, public_host: str = "") -> AsyncIterator[str]:
    """Serve probes on host:port (0: any free port) until the block exits; yields the URL to
    announce, with `public_host` in it when players reach this host by another name."""
    app = web.Application()
    app.router.add_get(PROBE_PATH, _answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
        bound = runner.addresses[0][1]
        yield f"http://{public_host or host}:{bound}{PROBE_PATH}"
    finally:
        await runner.cleanup()
