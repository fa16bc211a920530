"""Ctrl-C and SIGTERM stop every long-lived command cleanly, in every state it can be in.

Each test starts real `gamecast` processes, brings them into a state (idle, a player's session
playing, a bot session in flight, a session just ended), sends a signal and checks that the
process exits with status 0 and prints "stopped", and that a connected player was told why its
session ended. The bound here is generous (a busy machine must not fail it); how fast a stop
really is, is `gamecast bench stop`'s business (target: 2 s).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.stop import Running, playing, up, url_of
from verifier.bot import BotPlayer

GAMECAST = [sys.executable, "-m", "gamecast"]
STOP_BOUND_S = 10.0  # generous: the 2 s target is measured by `gamecast bench stop`
SIGNALS = [signal.SIGINT, signal.SIGTERM]
CONTAINER_LEAVING = "the container is shutting down"
INDEXER_LEAVING = "the indexer is shutting down"


def stop(process: Running, signum: signal.Signals) -> None:
    """Send `signum` and assert a clean stop: status 0, "stopped", no traceback."""
    if process.signal_and_wait(signum, STOP_BOUND_S) is None:
        pytest.fail(f"still running {STOP_BOUND_S} s after {signum.name}:\n{process.output}")
    assert process.process.returncode == 0, process.output
    assert "Traceback" not in process.output, process.output
    assert "gamecast: stopped" in process.output, process.output


@contextmanager
def running(*argv: str) -> Iterator[Running]:
    process = Running(*argv)
    try:
        yield process
    finally:
        process.kill()


async def told(bot: BotPlayer) -> str:
    """The reason the server gave the player for the end of its session."""
    async with asyncio.timeout(STOP_BOUND_S):
        while bot.end_reason is None:  # noqa: ASYNC110  (the bot keeps it as a field)
            await asyncio.sleep(0.05)
    return bot.end_reason


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key store with keys for one container host and one verifier."""
    folder = tmp_path_factory.mktemp("keys")
    for host in ("host", "verifier"):
        subprocess.run(
            [*GAMECAST, "keys", "--store", str(folder / "store.json"), "issue", "--host", host,
             "--out", str(folder / f"{host}.key")],
            check=True, capture_output=True,
        )  # fmt: skip
    return folder


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_up_stops_when_idle(signum: signal.Signals) -> None:
    process = up()
    try:
        process.wait_for(r"API: ")
        stop(process, signum)
    finally:
        process.kill()


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
async def test_up_stops_while_a_player_plays_and_tells_the_player_why(
    signum: signal.Signals,
) -> None:
    process = up()
    try:
        url = url_of(process)
        process.wait_for(r"API: ")
        async with playing(url) as bot:
            stopping = asyncio.create_task(asyncio.to_thread(stop, process, signum))
            assert await told(bot) == CONTAINER_LEAVING
            await stopping
    finally:
        process.kill()


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_up_stops_while_its_verifier_plays_a_bot_session(signum: signal.Signals) -> None:
    process = up(verifiers=1)
    try:
        process.wait_for(r"registration check passed")
        process.wait_for(r"x264 encoder: 1280x720@60")  # the bot's session starts streaming
        time.sleep(1.5)  # into its trace (a 1 s warm-up, then 8 s of input)
        stop(process, signum)
    finally:
        process.kill()


async def test_up_stops_right_after_a_session_ended() -> None:
    process = up()
    try:
        url = url_of(process)
        process.wait_for(r"API: ")
        async with playing(url):
            pass  # the player ends its session on leaving
        process.wait_for(r"ended: bot finished")
        await asyncio.to_thread(stop, process, signal.SIGINT)
    finally:
        process.kill()


async def test_indexer_container_and_verifier_stop_on_sigterm_and_players_hear_why(
    keys: Path,
) -> None:
    """A container and an on-duty verifier beside an indexer: the indexer stopping ends the
    player's session, saying why; each of the three commands exits cleanly on SIGTERM (the
    container while it tries to reach the indexer again)."""
    with running("indexer", "--port", "0", "--host-keys", str(keys / "store.json")) as first:
        url = url_of(first)
        first.wait_for(r"verifiers enlist")
        with running(
            "container", "--server", url.replace("http", "ws", 1) + "/ws/container",
            "--host-key", str(keys / "host.key"), "--id", "stop-1", "--capacity", "2",
        ) as agent, running(
            "verifier", "--server", url, "--on-duty", "--key", str(keys / "verifier.key"),
            "--verifier-id", "stop-v1",
        ) as verifier:  # fmt: skip
            agent.wait_for(r"container stop-1 registered")
            verifier.wait_for(r"enlisting with")
            first.wait_for(r"verifier stop-v1 enlisted")
            async with playing(url) as bot:
                stopping = asyncio.create_task(asyncio.to_thread(stop, first, signal.SIGTERM))
                assert await told(bot) == INDEXER_LEAVING
                await stopping
            await asyncio.to_thread(stop, verifier, signal.SIGTERM)
            assert agent.process.poll() is None, "the container outlives its indexer"
            await asyncio.to_thread(stop, agent, signal.SIGTERM)
