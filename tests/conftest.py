"""Fixtures that really start things: the embedded network on an ephemeral port, Chromium."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from node.runtime import RunningServer, embedded_network
from streamer.agent import ContainerAgent
from testbed.redis_server import RedisServer, running_redis_server
from verifier.bot import BotPlayer
from verifier.browser import launch_chromium


@pytest.fixture
async def network() -> AsyncIterator[tuple[RunningServer, ContainerAgent]]:
    """Signaling + indexer on 127.0.0.1:<ephemeral>, one container agent connected over WS.

    The container serves one session at a time (its measured capacity is tested on its own).
    """
    async with embedded_network(sessions=1) as running:
        yield running


@pytest.fixture
async def playing_bot(network, http) -> AsyncIterator[BotPlayer]:
    """An aiortc bot player in a session with the network's container, input channel open."""
    server, _ = network
    bot = BotPlayer(server.player_url)
    async with bot.play(http):
        await bot.wait_channel_open()
        yield bot


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    """Debian's Chromium, headless, driven by Playwright."""
    async with launch_chromium() as instance:
        yield instance


async def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A new page at `url`, with the list its uncaught exceptions collect in from the start."""
    errors: list[str] = []
    page = await browser.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    return page, errors


async def eventually(predicate: Callable[[], bool], seconds: float = 5) -> None:
    """Poll state owned by another component (a peer's counters) until `predicate` holds."""
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110  (no event to wait on: the state is a peer's)
            await asyncio.sleep(0.01)


def unexplained_gaps(bot: BotPlayer, agent: ContainerAgent) -> int:
    """Frames the bot missed that neither an unreadable marker nor the sender's drop policy
    (a frame replaced while the encoder was busy, on a loaded machine) accounts for."""
    session = agent.sessions[bot.session_id]
    stats = session.track.pipeline.stats
    dropped = stats.dropped_before_encode + stats.dropped_before_send
    return max(0, bot.log.sequence_gaps() - bot.log.unreadable - dropped)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip `gpu` and `nvenc` tests, with the probe's reason, where the hardware is missing."""
    marked = {name for item in items for name in ("gpu", "nvenc") if item.get_closest_marker(name)}
    reasons: dict[str, str | None] = {}
    if "gpu" in marked:
        from streamer.gpu import gpu_unavailable_reason  # noqa: PLC0415

        reasons["gpu"] = gpu_unavailable_reason()
    if "nvenc" in marked:
        from streamer.backends import nvenc_unavailable_reason  # noqa: PLC0415

        reasons["nvenc"] = nvenc_unavailable_reason()
    for item in items:
        for name, reason in reasons.items():
            if reason is not None and item.get_closest_marker(name):
                item.add_marker(pytest.mark.skip(reason=f"no {name}: {reason}"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Debian's redis-server on a unix socket, shared by the session's tests (see
    testbed/redis_server.py); take `redis_url` to get it emptied first."""
    with running_redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL (unix://...) of `redis_server`, emptied (FLUSHALL) for this test."""
    import redis  # noqa: PLC0415

    with redis.Redis(unix_socket_path=str(redis_server.socket_path)) as client:
        client.flushall()
    return redis_server.url
