"""A container agent survives its signaling server going away and coming back."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import aiohttp

from node.runtime import run_agent, serve
from streamer.agent import AgentConfig, ContainerAgent
from tests.conftest import eventually


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _registered(url: str) -> list[str]:
    async with aiohttp.ClientSession() as http, http.get(url + "/api/containers") as response:
        return [c["container"] for c in (await response.json())["containers"]]


async def test_agent_registers_again_after_the_server_restarts() -> None:
    port = _free_port()
    async with contextlib.AsyncExitStack() as stack:
        first = serve("127.0.0.1", port)
        server = await first.__aenter__()
        agent = await stack.enter_async_context(run_agent(AgentConfig(server.container_url, "c1")))
        assert await _registered(server.url) == ["c1"]

        await first.__aexit__(None, None, None)  # the server goes away under the agent
        await eventually(lambda: not agent.registered.is_set())

        async with serve("127.0.0.1", port) as restarted:
            async with asyncio.timeout(10):
                await agent.registered.wait()
            assert await _registered(restarted.url) == ["c1"]


async def test_agent_survives_a_heartbeat_that_hits_a_closing_socket(monkeypatch) -> None:
    """A send failing inside the heartbeat task must not end the agent's reconnect loop."""
    heartbeats_started = 0
    stock_heartbeat = ContainerAgent._heartbeat

    async def fails_the_first_time(self: ContainerAgent, ws: object, interval: float) -> None:
        nonlocal heartbeats_started
        heartbeats_started += 1
        if heartbeats_started == 1:
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
        await stock_heartbeat(self, ws, interval)

    monkeypatch.setattr(ContainerAgent, "_heartbeat", fails_the_first_time)
    async with (
        serve("127.0.0.1", 0) as server,
        run_agent(AgentConfig(server.container_url, "c1")),
    ):
        await eventually(lambda: heartbeats_started >= 2)  # reconnected and registered again
        async with asyncio.timeout(5):
            while await _registered(server.url) != ["c1"]:  # noqa: ASYNC110 (server state)
                await asyncio.sleep(0.02)
