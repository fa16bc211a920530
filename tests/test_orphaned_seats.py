"""A seat claimed by an indexer that dies before its player offers is freed by the indexer
holding the container: the player went with the dead indexer, the container never heard."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp

from contracts import protocol as p
from indexer.keys import KeyStore
from node.runtime import RunningServer, run_agent, serve
from signaling.config import ServerConfig
from streamer.agent import AgentConfig
from tests.test_indexers import indexers


async def sessions_on(http: aiohttp.ClientSession, server: RunningServer) -> list[str]:
    async with http.get(f"{server.url}/api/containers") as response:
        (row,) = (await response.json())["containers"]
    return list(row["sessions"])


async def first_match(player: aiohttp.ClientWebSocketResponse) -> p.Matched:
    """The player's match: a new indexer may queue it for a moment while its feed catches up
    with the container (on a busy machine), and seats it from the queue once it has."""
    async with asyncio.timeout(15):
        while True:
            message = p.parse_message((await player.receive()).data, "server")
            if isinstance(message, p.Matched):
                return message
            assert isinstance(message, p.Queued), message


async def test_a_killed_indexers_reservation_is_freed(
    redis_url: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    KeyStore(keys).save()
    holder_config = ServerConfig(redis_url=redis_url, indexer_id="holder", heartbeat_period=0.5)
    async with serve("127.0.0.1", 0, holder_config) as holder:
        agent = AgentConfig(holder.container_url, "c1", encoder="x264", max_width=1280,
                            max_height=720, max_fps=60)  # fmt: skip
        async with run_agent(agent, sessions=1):
            with indexers(1, redis_url, keys) as (doomed,):
                async with http.ws_connect(doomed.server.player_url) as player:
                    await player.send_str(p.Play("reference", 1280, 720, 60).to_json())
                    matched = await first_match(player)
                    assert matched.container == "c1"
                    seats: list[str] = []

                    async def seen() -> None:
                        seats[:] = await sessions_on(http, holder)

                    async with asyncio.timeout(5):  # the holder's feed shows the reservation
                        while matched.session not in seats:
                            await seen()
                    doomed.process.kill()  # before the player could offer
                    doomed.process.wait(10)
                    with contextlib.suppress(TimeoutError):  # the holder sweeps every 0.5 s
                        async with asyncio.timeout(10):
                            while seats:
                                await asyncio.sleep(0.2)
                                await seen()
    assert seats == []
