"""Start and stop the pieces as one process: signaling + indexer, and container agents."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from contracts.signing import HostCredentials
from contracts.stream_shapes import advertised_shapes
from indexer.keys import KeyStore
from judge.coordinator import VerificationConfig
from judge.rotation import RotationConfig
from signaling.config import ServerConfig
from signaling.server import create_app
from streamer.agent import AgentConfig, ContainerAgent
from streamer.backends import choose_encoder
from streamer.capacity import (
    capacity_from_costs,
    fixed_capacity,
    measure_frame_ms,
)
from streamer.capacity import describe as describe_capacity
from streamer.encoder import H264_BACKENDS, X264, install_encoder
from streamer.gpu import gpu_unavailable_reason
from streamer.playout_delay import install_playout_delay
from verifier.agent import VerifierAgent, VerifierConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningServer:
    url: str  # http://host:port
    host_keys: Path | None = None  # the key store registrations are checked against

    @property
    def container_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws/container"

    @property
    def player_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws/player"


@contextlib.asynccontextmanager
async def serve(
    host: str, port: int, config: ServerConfig | None = None
) -> AsyncIterator[RunningServer]:
    """Run the signaling server (port 0 picks a free port) until the block exits."""
    runner = web.AppRunner(create_app(config), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    try:
        yield RunningServer(f"http://{host}:{bound}", config.host_keys if config else None)
    finally:
        await runner.cleanup()


def _report_agent_exit(task: asyncio.Task[None]) -> None:
    """An agent only ends when cancelled; anything else must be seen, not swallowed."""
    if not task.cancelled() and task.exception() is not None:
        log.error("container agent %s stopped: %r", task.get_name(), task.exception())


async def prepare_host(config: AgentConfig, sessions: int | None = None) -> AgentConfig:
    """Probe the host once, before registering: which encoder works, whether frames can be
    drawn on a GPU, and how many sessions fit (`sessions`: the operator's figure instead)."""
    choice = choose_encoder(config.encoder)
    # aiortc's own encoders take CPU frames only: no reason to look for a GPU then.
    gpu_reason = "aiortc's encoders" if choice.backend == "aiortc" else gpu_unavailable_reason()
    frames_on = "gpu" if gpu_reason is None else "cpu"
    if gpu_reason is None:
        log.info("frames drawn on the GPU (CuPy), NV12 BT.709")
    else:
        log.info("frames drawn on the CPU, I420 BT.601 (%s)", gpu_reason)
    shapes = advertised_shapes(config.max_width, config.max_height, config.max_fps)
    if sessions is not None:
        capacity = fixed_capacity(shapes, sessions)
        how = "set by the operator"
    else:
        backend = H264_BACKENDS.get(choice.backend, X264)  # aiortc's: costed as x264
        costs = {
            size: await asyncio.to_thread(measure_frame_ms, backend, *size)
            for size in sorted({(width, height) for width, height, _ in shapes})
        }
        capacity = capacity_from_costs(costs, shapes, os.cpu_count() or 1)
        measured = ", ".join(f"{w}x{h} {ms:.1f} ms" for (w, h), ms in costs.items())
        how = f"from a self-benchmark (draw + encode per frame: {measured})"
    log.info("capacity %s: %s", how, describe_capacity(capacity))
    return dataclasses.replace(
        config,
        encoder=choice.backend,
        encoder_reason=choice.reason,
        frames_on=frames_on,
        capacity=tuple(capacity),
    )


@contextlib.asynccontextmanager
async def run_agent(
    config: AgentConfig, sessions: int | None = None
) -> AsyncIterator[ContainerAgent]:
    """Run a container agent until the block exits; yields once it has registered.

    The host is probed first (`prepare_host`); `sessions` overrides its measured capacity.
    """
    config = await prepare_host(config, sessions)
    install_encoder(config.encoder)
    if config.playout_delay:
        install_playout_delay()
    agent = ContainerAgent(config)
    task = asyncio.create_task(agent.run(), name=f"agent-{config.container_id}")
    task.add_done_callback(_report_agent_exit)
    try:
        registered = asyncio.create_task(agent.registered.wait())
        # Builds to deploy are fetched and unpacked before registering: give them time.
        limit = 15 + (600 if config.deploy else 0)
        done, _ = await asyncio.wait(
            {task, registered}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
        )
        if registered not in done:
            registered.cancel()
            if task in done:
                task.result()
            raise TimeoutError(
                f"container {config.container_id} did not register with {config.server_url}"
            )
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def run_verifier(agent: VerifierAgent) -> AsyncIterator[VerifierAgent]:
    """Run a verifier until the block exits; yields once the indexer has enlisted it."""
    task = asyncio.create_task(agent.run(), name=f"verifier-{agent.config.verifier_id}")
    try:
        async with asyncio.timeout(15):
            await agent.enlisted.wait()
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def verification_for(
    verifiers: int, schedule: VerificationConfig | None = None
) -> VerificationConfig:
    """`schedule` for a network of `verifiers`: all on duty, the largest odd committee."""
    committee = verifiers if verifiers % 2 else verifiers - 1
    rotation = RotationConfig(duty_size=verifiers, committee_size=committee)
    return dataclasses.replace(schedule or VerificationConfig(), rotation=rotation)


@contextlib.asynccontextmanager
async def embedded_network(
    host: str = "127.0.0.1",
    port: int = 0,
    encoder: str = "auto",
    codec: str = "h264",
    playout_delay: bool = True,
    *,
    steady_release: bool = True,
    max_width: int = AgentConfig.max_width,
    max_height: int = AgentConfig.max_height,
    max_fps: int = AgentConfig.max_fps,
    sessions: int | None = None,
    verifiers: int = 0,
) -> AsyncIterator[tuple[RunningServer, ContainerAgent]]:
    """The whole network in one process: what `gamecast up` runs and what tests start.

    The container advertises `max_width`x`max_height`@`max_fps`; the indexer matches no larger
    request to it, and no more sessions than its capacity (`sessions`, or measured at start).
    With `verifiers`, that many verifiers enlist first and the container is offered to
    players only once they inspected it; without, its announced specs are taken as inspected.
    """
    with tempfile.TemporaryDirectory(prefix="gamecast-") as state:
        # The container is authenticated like any other: a host key issued for this run.
        store = KeyStore(Path(state) / "host-keys.json")
        now = datetime.now(UTC).isoformat()
        _, key_file = store.issue("local", now)
        names = [f"local-verifier-{number}" for number in range(1, verifiers + 1)]
        verifier_keys = [HostCredentials.parse(store.issue(n, now)[1]) for n in names]
        store.save()
        credentials = HostCredentials.parse(key_file)
        config = ServerConfig(host_keys=store.path)
        if verifiers:
            config = dataclasses.replace(
                config, admit_on_register=False, verification=verification_for(verifiers)
            )
        async with (
            serve(host, port, config) as server,
            contextlib.AsyncExitStack() as on_duty,
        ):
            for name, key in zip(names, verifier_keys, strict=True):
                verifier = VerifierAgent(VerifierConfig(server.url, name, key=key))
                await on_duty.enter_async_context(run_verifier(verifier))
            agent_config = AgentConfig(
                server.container_url,
                "local-1",
                host_key=credentials,
                encoder=encoder,
                codec=codec,
                playout_delay=playout_delay,
                steady_release=steady_release,
                max_width=max_width,
                max_height=max_height,
                max_fps=max_fps,
                probe=(host, 0, host),
            )
            async with run_agent(agent_config, sessions) as agent:
                yield server, agent
