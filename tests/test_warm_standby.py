"""Warm standby with everything real: an indexer with the example build, a container agent that
deploys it and keeps a sandboxed run of it waiting (Xvfb, the game in bwrap, XTEST), aiortc
bots as players, and psutil watching the processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from builds.upload import upload_build
from node.runtime import RunningServer
from streamer.agent import ContainerAgent
from streamer.build_run import BuildRun
from streamer.sandbox_host import SandboxUnavailable, probe_sandbox
from streamer.standby_rules import SlotState
from streamer.warm_pool import WarmPool
from tests.conftest import eventually
from tests.test_builds_e2e import archive, hosting, network
from verifier.bot import BotPlayer


async def _sandbox_reason() -> str | None:
    try:
        await probe_sandbox()
    except SandboxUnavailable as exc:
        return str(exc)
    return None


@pytest.fixture
async def sandboxed() -> None:
    reason = await _sandbox_reason()
    if reason is not None:
        pytest.skip(f"no working sandbox here: {reason}")


def processes_of(run: BuildRun) -> list[psutil.Process]:
    """The run's Xvfb and every process of its game's sandbox."""
    game = psutil.Process(run.game.pid)
    return [psutil.Process(run.display.pid), game, *game.children(recursive=True)]


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    survivors = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                survivors.append(process)
        except psutil.NoSuchProcess:
            continue
    return survivors


def pool_of(agent: object) -> WarmPool:
    pool = getattr(agent, "standby", None)
    assert isinstance(pool, WarmPool), "the agent keeps no warm pool"
    return pool


@contextlib.asynccontextmanager
async def hosting_arcade(
    tmp: Path, http: aiohttp.ClientSession
) -> AsyncIterator[tuple[RunningServer, ContainerAgent, WarmPool, BuildRun]]:
    """An indexer with the example build uploaded, an agent hosting it, and its waiting run."""
    async with network(tmp) as (server, key):
        await upload_build(http, server.url, key, archive(tmp, "arcade", ["python3", "game.py"]))
        async with hosting(server, tmp, "arcade") as agent:
            pool = pool_of(agent)
            yield server, agent, pool, await asyncio.wait_for(pool.wait_ready("arcade"), 20)


async def test_the_first_player_takes_the_waiting_run_and_a_fresh_one_follows_the_session(
    tmp_path: Path, http: aiohttp.ClientSession, sandboxed: None
) -> None:
    async with hosting_arcade(tmp_path, http) as (server, agent, pool, waiting):
        waited_pid = waiting.pid
        assert waiting.game.running and not waiting.streaming

        bot = BotPlayer(server.player_url)
        async with bot.play(http, game="arcade"):
            await bot.wait_frames(10)
            run = agent.build_run(bot.session_id)
            assert run is waiting and run.pid == waited_pid and run.streaming
            assert pool.waiting("arcade") is None  # taken: none beside a playing session
            await asyncio.sleep(0.3)
            assert pool.states["arcade"] is SlotState.EMPTY
            played = processes_of(run)
        fresh = await asyncio.wait_for(pool.wait_ready("arcade"), 20)
        assert fresh.pid != waited_pid
        await eventually(lambda: not alive(played), seconds=10)  # the played run is gone
        assert list(agent.game_exits) == []  # stopped on purpose: nothing to record


def runs_the_game(process: psutil.Process) -> bool:
    try:
        return "game.py" in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


def statuses(processes: list[psutil.Process]) -> set[str]:
    return {process.status() for process in processes}


async def test_a_settled_waiting_game_is_paused_and_runs_again_when_a_player_takes_it(
    tmp_path: Path, http: aiohttp.ClientSession, sandboxed: None
) -> None:
    async with hosting_arcade(tmp_path, http) as (server, agent, _pool, waiting):
        stopped = {psutil.STATUS_STOPPED}
        await eventually(lambda: statuses(processes_of(waiting)[1:]) == stopped, seconds=10)
        sandbox = processes_of(waiting)[1:]
        assert waiting.paused and len(sandbox) >= 2  # bwrap, and the game inside
        cpu = sum(p.cpu_times().user + p.cpu_times().system for p in sandbox)
        await asyncio.sleep(0.5)
        assert sum(p.cpu_times().user + p.cpu_times().system for p in sandbox) == cpu

        bot = BotPlayer(server.player_url)
        async with bot.play(http, game="arcade"):
            await bot.wait_channel_open()
            await bot.wait_frames(5)
            assert agent.build_run(bot.session_id) is waiting and not waiting.paused
            assert psutil.STATUS_STOPPED not in statuses(sandbox)
            before = bot.log.samples[-1].marker.input_sequence
            bot.send_input({"type": "key", "code": "KeyD", "down": True})
            await eventually(lambda: bot.log.samples[-1].marker.input_sequence > before, seconds=10)


async def test_a_waiting_game_that_dies_is_recorded_and_replaced(
    tmp_path: Path, http: aiohttp.ClientSession, sandboxed: None
) -> None:
    async with hosting_arcade(tmp_path, http) as (server, agent, pool, waiting):
        await eventually(lambda: any(map(runs_the_game, processes_of(waiting))), seconds=10)
        doomed = processes_of(waiting)
        game = next(filter(runs_the_game, doomed))
        os.kill(game.pid, signal.SIGKILL)  # the build's own process, inside its sandbox

        await eventually(lambda: len(agent.game_exits) == 1, seconds=10)
        ((label, how),) = agent.game_exits
        assert label == "standby:arcade" and not how.requested
        replacement = await asyncio.wait_for(pool.wait_ready("arcade"), 20)
        assert replacement is not waiting and replacement.game.running
        assert pool.rules.slots["arcade"].failures == 1  # the next crash waits 2 s
        await eventually(lambda: not alive(doomed), seconds=10)

        bot = BotPlayer(server.player_url)  # and the replacement plays
        async with bot.play(http, game="arcade"):
            await bot.wait_frames(5)
            assert agent.build_run(bot.session_id) is replacement


async def test_a_changed_build_discards_the_waiting_run_and_the_session_starts_a_verified_one(
    tmp_path: Path, http: aiohttp.ClientSession, sandboxed: None
) -> None:
    async with hosting_arcade(tmp_path, http) as (server, agent, _pool, waiting):
        stale = processes_of(waiting)
        script = agent.builds["arcade"].path / "game.py"
        script.chmod(0o644)
        with script.open("a") as altered:
            altered.write("\n# altered on the host\n")

        bot = BotPlayer(server.player_url)
        async with bot.play(http, game="arcade"):
            await bot.wait_frames(5)
            run = agent.build_run(bot.session_id)
            assert run is not None and run is not waiting and run.pid != waiting.pid
        (fault,) = agent.build_faults
        assert fault.redeployed and "game.py" in fault.reason
        await eventually(lambda: not alive(stale), seconds=10)


async def test_stopping_the_agent_empties_the_pool_within_two_seconds_and_leaves_no_process(
    tmp_path: Path, http: aiohttp.ClientSession, sandboxed: None
) -> None:
    async with network(tmp_path) as (server, key):
        await upload_build(
            http, server.url, key, archive(tmp_path, "arcade", ["python3", "game.py"])
        )
        hosted = hosting(server, tmp_path, "arcade")
        agent = await hosted.__aenter__()
        try:
            pool = pool_of(agent)
            waiting = await asyncio.wait_for(pool.wait_ready("arcade"), 20)
            stopped = {psutil.STATUS_STOPPED}  # paused: the case that could wait out SIGTERM
            await eventually(lambda: statuses(processes_of(waiting)[1:]) == stopped, seconds=10)
            processes = processes_of(waiting)
            assert len(processes) >= 3  # Xvfb, the sandbox, the game in it
        finally:
            began = time.monotonic()
            await hosted.__aexit__(None, None, None)
            took = time.monotonic() - began
        assert took < 2.0, f"the agent took {took:.2f} s to stop"
        assert pool.waiting("arcade") is None
        assert alive(processes) == []
