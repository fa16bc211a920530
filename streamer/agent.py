"""The container agent: one outbound WebSocket to signaling (works behind NAT), sessions on demand.

It registers its specs (host CPU, RAM and GPUs among them), heartbeats with its telemetry at
the period the server asks for, answers relayed offers with a StreamSession, and reports when
media flows, how each live session's frames went (every TIMINGS_PERIOD_S: the indexer keeps
them for live samples) and when a session ends. If the connection drops it reconnects with
backoff and registers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from builds.errors import DeployError
from contracts import protocol as p
from contracts.signing import HostCredentials
from streamer.build_run import BuildRun
from streamer.deploy import BuildFault, DeployedBuild, deploy, deployed_builds, verify_build
from streamer.fault_reports import ReportOutbox, fault_report, game_report
from streamer.game_process import GameExit
from streamer.impairment import NO_IMPAIRMENT, Impairment
from streamer.indexer_link import (
    Action,
    AnswerChallenge,
    Disconnect,
    EndSession,
    IndexerLink,
    Note,
    RefuseSession,
    Register,
    RevealRows,
    StartReporting,
    StartSession,
    next_server,
    reconnect_delay,
)
from streamer.inspected import ChallengeSolver
from streamer.probe_endpoint import probe_endpoint
from streamer.sandbox_host import SandboxHost, SandboxUnavailable, probe_sandbox
from streamer.session import StreamOptions, StreamSession
from streamer.telemetry import TelemetryReader
from streamer.warm_pool import WarmPool
from streamer.window_capture import WindowFrames

log = logging.getLogger(__name__)

GAME_EXITS_KEPT = 64
TIMINGS_PERIOD_S = 2.0
REPORTS_PERIOD_S = 0.5  # how often waiting build reports are sent, once registered
LEAVING = "the container is shutting down"


async def _every(
    ws: aiohttp.ClientWebSocketResponse, interval: float, beat: Callable[[], Awaitable[None]]
) -> None:
    """Await `beat` now and every `interval` seconds of a monotonic schedule while `ws` is
    open: the time a beat takes never stretches the period."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while not ws.closed:
        await beat()
        due += interval
        await asyncio.sleep(max(0.0, due - loop.time()))


@dataclass(frozen=True)
class AgentConfig:
    server_url: str  # ws://host:port/ws/container
    container_id: str
    games: tuple[str, ...] = ("reference",)
    encoder: str = "auto"  # resolved to nvenc, x264 or aiortc by streamer.backends at start
    encoder_reason: str = ""  # why that encoder, as the probe found it
    frames_on: str = "cpu"  # "gpu": the game is drawn with CuPy (streamer/gpu.py)
    capacity: tuple[p.StreamCapacity, ...] = ()  # sessions per shape (streamer/capacity.py)
    codec: str = "h264"
    max_width: int = 1920
    max_height: int = 1080
    max_fps: int = 120
    playout_delay: bool = True  # ask browsers to render at once (streamer/playout_delay.py)
    steady_release: bool = True  # hand frames on at even intervals (streamer/pacing.py)
    region: str = ""  # where the operator says the host is
    price_per_minute: float = 0.0
    uplink_mbps: float = 0.0  # 0: not measured
    host_key: HostCredentials | None = None  # signs the registration (contracts/signing.py)
    # Other indexers of the network: after a lost connection the agent registers with one of
    # these or server_url, at random, never the one that just failed while another is left.
    other_servers: tuple[str, ...] = ()
    # Faults on purpose, so verifier tests and `gamecast bench verifier` can show they are
    # caught (streamer/impairment.py); never set on a container that serves players.
    impairment: Impairment = NO_IMPAIRMENT
    # Where players time round trips to this host before a claim (streamer/probe_endpoint.py):
    # (bind address, port, the host name players reach it by); None: no probes.
    probe: tuple[str, int, str] | None = None
    # Studios' builds (builds/): deployed under `builds_dir`, and the ones named in `deploy`
    # fetched from the indexer (latest version) at start; each is announced as a game.
    builds_dir: Path | None = None
    deploy: tuple[str, ...] = ()
    # Builds run only in a sandbox (streamer/sandbox_host.py); where bwrap does not work the
    # operator may still run them unconfined, by saying so.
    unsafe_no_sandbox: bool = False
    # Keep a started run of each build waiting for the next player (streamer/warm_pool.py):
    # Play then skips the display, sandbox and game start, for a display and a game held idle.
    warm_standby: bool = True


class ContainerAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        if config.impairment.active:
            log.warning(
                "container %s is impaired on purpose: %s",
                config.container_id,
                config.impairment.describe(),
            )
        self.sessions: dict[str, StreamSession] = {}
        self.registered = asyncio.Event()
        self._closing: set[asyncio.Future[None]] = set()  # sessions whose peers are closing
        self.telemetry = TelemetryReader()
        self._probe_url = ""  # announced once the probe endpoint listens
        self.builds: dict[str, DeployedBuild] = {}  # by name: what sessions may ask to play
        # (session, how its game ended): the latest GAME_EXITS_KEPT, for the operator
        self.game_exits: deque[tuple[str, GameExit]] = deque(maxlen=GAME_EXITS_KEPT)
        self.build_faults: deque[BuildFault] = deque(maxlen=GAME_EXITS_KEPT)  # altered on disk
        self.reports = ReportOutbox()  # both, for the indexer (p.BuildEvent), until sent
        self._runs: dict[str, BuildRun] = {}  # a build session's display, game, capture...
        self.standby: WarmPool | None = None  # the waiting runs, while the agent runs
        self._stopping = False  # cancelled: sessions end, and no waiting run replaces them
        self.solver = ChallengeSolver(self.telemetry, on_gpu=config.frames_on == "gpu")
        self.sandbox: SandboxHost | None = None  # found at start when it hosts builds
        self.sandbox_refusal = "the container hosts no builds"  # why not, when None

    async def run(self) -> None:
        """Stay connected until cancelled; NVML is shut down when it ends."""
        attempt = 0
        url = self.config.server_url
        with self.telemetry:
            async with contextlib.AsyncExitStack() as stack:
                if self.config.probe is not None:
                    self._probe_url = await stack.enter_async_context(
                        probe_endpoint(*self.config.probe)
                    )
                    log.info("players probe this host at %s", self._probe_url)
                http = await stack.enter_async_context(aiohttp.ClientSession())
                if self.config.builds_dir is not None:
                    await self._probe_sandbox()
                await self._deploy(http)
                if self.builds and self.config.warm_standby:
                    self.standby = await stack.enter_async_context(self._warm_pool())
                while True:
                    try:
                        async with http.ws_connect(url, max_msg_size=4 * p.MAX_MESSAGE_BYTES) as ws:
                            try:
                                await self._serve(ws)
                            except asyncio.CancelledError:  # stopping: say so while we can
                                self._stopping = True
                                await self._leave(ws)
                                raise
                    except* (aiohttp.ClientError, OSError) as group:
                        # Sends can fail in the heartbeat task too, hence a group, not one error.
                        log.warning(
                            "container %s: signaling unreachable (%s)",
                            self.config.container_id,
                            "; ".join(str(e) for e in group.exceptions),
                        )
                    finally:
                        if self.registered.is_set():  # it served: back off from the start
                            attempt = 0
                        self.registered.clear()
                        self._stopping = self._stopping or _cancelling()
                        await self._close_sessions("signaling connection lost")
                        # Closes begun before a cancel (the agent stopping) still finish, or
                        # their peers' sockets would outlive the agent.
                        await asyncio.gather(*self._closing, return_exceptions=True)
                    _raise_if_stopping()
                    await asyncio.sleep(reconnect_delay(attempt))
                    attempt += 1
                    url = next_server((self.config.server_url, *self.config.other_servers), url)

    def build_run(self, session_id: str) -> BuildRun | None:
        """The build's run a session plays (its display, game, capture); None for the
        reference game or an unknown session."""
        return self._runs.get(session_id)

    async def _leave(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The agent is stopping: lock this container under maintenance, so the indexer seats
        nobody new on it, then end each session, its player told why."""
        if not self.registered.is_set() or ws.closed:
            return
        with contextlib.suppress(ConnectionError):  # the indexer went first: nobody to tell
            await ws.send_str(p.Maintenance(LEAVING).to_json())
            for session_id in list(self.sessions):
                await _send_end(ws, session_id, LEAVING)  # first: the player hears at once
                await self._end_session(session_id, LEAVING)

    async def _registration(self, challenge: str) -> p.Register:
        """Our specs, signed over the connection's challenge with the operator's host key."""
        cfg = self.config
        register = p.Register(
            cfg.container_id,
            [*cfg.games, *self.builds],
            [cfg.encoder],
            cfg.max_width,
            cfg.max_height,
            cfg.max_fps,
            host=await asyncio.to_thread(self.telemetry.host_specs),  # NVML calls block
            encoder_reason=cfg.encoder_reason,
            frames_on=cfg.frames_on,
            capacity=list(cfg.capacity),
            region=cfg.region,
            price_per_minute=cfg.price_per_minute,
            uplink_mbps=cfg.uplink_mbps,
            probe_url=self._probe_url,
        )
        return register if cfg.host_key is None else cfg.host_key.signed(register, challenge)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Carry out what the link's rules (streamer/indexer_link.py) make of each message,
        until the socket closes or the link says to disconnect."""
        cfg = self.config
        shapes = {name: build.manifest.needs().shape for name, build in self.builds.items()}
        link = IndexerLink(cfg.games, shapes)
        async with asyncio.TaskGroup() as tasks:
            reporters: list[asyncio.Task[None]] = []  # heartbeat and timings, once registered
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    break
                try:
                    message = p.parse_message(frame.data, "server")
                except p.ProtocolError as exc:
                    log.warning("container %s: bad message from server: %s", cfg.container_id, exc)
                    continue
                actions = link.receive(message)
                for action in actions:
                    reporters += await self._carry_out(ws, tasks, action)
                if any(isinstance(action, Disconnect) for action in actions):
                    break
            for reporter in reporters:
                reporter.cancel()

    async def _carry_out(
        self, ws: aiohttp.ClientWebSocketResponse, tasks: asyncio.TaskGroup, action: Action
    ) -> list[asyncio.Task[None]]:
        """Do one action; returns the reporting tasks it started, if it started them."""
        container_id = self.config.container_id
        if isinstance(action, Register):
            await ws.send_str((await self._registration(action.challenge)).to_json())
        elif isinstance(action, StartReporting):
            self.registered.set()
            log.info("container %s registered", container_id)
            return [
                tasks.create_task(self._heartbeat(ws, action.interval_s)),
                tasks.create_task(self._report_timings(ws)),
                tasks.create_task(_every(ws, REPORTS_PERIOD_S, lambda: self._send_reports(ws))),
            ]
        elif isinstance(action, StartSession):
            await self._start_session(ws, action.offer)
        elif isinstance(action, RefuseSession):
            log.warning("container %s: %s", container_id, action.reason)
            await _send_end(ws, action.session_id, action.reason)
        elif isinstance(action, EndSession):
            await self._end_session(action.session_id, action.reason)
        elif isinstance(action, AnswerChallenge):
            tasks.create_task(self._answer_challenge(ws, action.challenge))
        elif isinstance(action, RevealRows):
            await self._reveal(ws, action.reveal)
        elif isinstance(action, Note):
            log.warning("container %s: %s", container_id, action.text)
        else:
            log.warning("container %s: %s", container_id, action.reason)
        return []

    async def _answer_challenge(
        self, ws: aiohttp.ClientWebSocketResponse, message: p.InspectionChallenge
    ) -> None:
        """A verifier's registration challenge (streamer/inspected.py), worked in a thread."""
        try:
            commitment = await self.solver.commit(message)
        except Exception as exc:  # a challenge it refuses or cannot do must not stop the agent
            log.warning("container %s: challenge not answered: %r", self.config.container_id, exc)
            return
        await ws.send_str(commitment.to_json())

    async def _reveal(
        self, ws: aiohttp.ClientWebSocketResponse, message: p.InspectionReveal
    ) -> None:
        try:
            rows = self.solver.reveal(message)
        except p.ProtocolError as exc:
            log.warning("container %s: %s", self.config.container_id, exc.reason)
            return
        for row in rows:
            await ws.send_str(row.to_json())

    async def _heartbeat(self, ws: aiohttp.ClientWebSocketResponse, interval: float) -> None:
        """Beat every `interval` from a monotonic schedule, so reading telemetry (in a worker
        thread: NVML calls block) never stretches the period the server counts on."""

        async def beat() -> None:
            telemetry = await asyncio.to_thread(self.telemetry.telemetry)
            await ws.send_str(p.Heartbeat(telemetry).to_json())

        await _every(ws, interval, beat)

    async def _report_timings(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Each live session's frame timings since the last report (SessionTimings)."""

        async def report() -> None:
            for session in list(self.sessions.values()):
                timings = session.timings()
                if timings is not None:
                    await ws.send_str(timings.to_json())

        await _every(ws, TIMINGS_PERIOD_S, report)

    async def _send_reports(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send what waits in the outbox (a report the socket fails on is lost)."""
        while (report := self.reports.take()) is not None:
            await ws.send_str(report.to_json())

    def _build_fault(self, fault: BuildFault, session_id: str = "") -> None:
        """Keep a build fault for the operator and report it (from deploy's worker threads)."""
        self.build_faults.append(fault)
        self.reports.add(fault_report(fault, session_id))

    async def _probe_sandbox(self) -> None:
        """Run one sandbox (`bwrap ... true`) to know whether builds can be confined here."""
        try:
            self.sandbox = await probe_sandbox()
        except SandboxUnavailable as exc:
            self.sandbox_refusal = f"builds run only in a sandbox and none works here: {exc}"
            if self.config.unsafe_no_sandbox:
                log.warning("container %s: builds run UNSANDBOXED (--unsafe-no-sandbox): %s",
                            self.config.container_id, exc)  # fmt: skip
            else:
                log.error("container %s: %s", self.config.container_id, self.sandbox_refusal)
            return
        log.info("container %s: builds are sandboxed: %s", self.config.container_id,
                 self.sandbox.describe())  # fmt: skip

    async def _deploy(self, http: aiohttp.ClientSession) -> None:
        """Fetch, verify and unpack the builds the operator named; know every deployed one."""
        root = self.config.builds_dir
        if root is None:
            return
        base = self.config.server_url.replace("ws", "http", 1).split("/ws/", 1)[0]
        fetched: dict[str, DeployedBuild] = {}
        listed: list[dict[str, Any]] = []
        if self.config.deploy:
            try:
                async with http.get(f"{base}/api/builds") as response:
                    response.raise_for_status()
                    listed = (await response.json())["builds"]  # oldest upload first
            except (aiohttp.ClientError, OSError) as exc:  # serve what is unpacked already
                log.error("container %s: cannot list builds at %s: %s",
                          self.config.container_id, base, exc)  # fmt: skip
            for name in self.config.deploy if listed else ():
                versions = [b for b in listed if b["name"] == name]
                try:
                    if not versions:
                        raise DeployError(f"the indexer at {base} has no build named {name!r}")
                    sha256, key = versions[-1]["sha256"], self.config.host_key
                    fetched[name] = await deploy(
                        http, base, sha256, root, host_key=key, report=self._build_fault
                    )
                except DeployError as exc:  # one bad build must not take the others down
                    log.error(
                        "container %s: %s not deployed: %s", self.config.container_id, name, exc
                    )
        # What was just fetched wins over older versions still unpacked beside it.
        on_disk = await asyncio.to_thread(deployed_builds, root, self._build_fault)
        self.builds = {build.name: build for build in on_disk} | fetched
        if self.builds:
            log.info("builds deployed: %s", ", ".join(sorted(self.builds)))

    async def _start_session(
        self, ws: aiohttp.ClientWebSocketResponse, offer: p.SessionOffer
    ) -> None:
        """Open the offer's session; no standby run starts meanwhile, nor while it plays."""
        pool = self.standby
        if pool is not None:
            pool.session_started(offer.session)
        try:
            await self._open_session(ws, offer)
        finally:
            if pool is not None and offer.session not in self.sessions:
                pool.session_ended(offer.session)  # refused (ended ones are in _shut too)

    async def _open_session(
        self, ws: aiohttp.ClientWebSocketResponse, offer: p.SessionOffer
    ) -> None:
        session_id = offer.session
        cfg = self.config
        build = self.builds.get(offer.game)
        altered: list[BuildFault] = []  # found before this session: a waiting run is stale

        def found(fault: BuildFault) -> None:
            altered.append(fault)
            self._build_fault(fault, session_id)

        if build and self.standby is not None:
            await self.standby.settled(build.name)  # one verification of a tree at a time
        if build and (refused := await asyncio.to_thread(verify_build, build, found)):
            await _send_end(ws, session_id, refused)  # altered on disk, and not deployable again
            return
        width, height, fps = offer.width, offer.height, offer.fps  # its seat's (IndexerLink)
        options = StreamOptions(
            width,
            height,
            fps,
            codec=cfg.codec,
            encoder=cfg.encoder,
            gpu=cfg.frames_on == "gpu",
            steady_release=cfg.steady_release,
            impairment=cfg.impairment,
        )

        async def playing() -> None:
            await ws.send_str(p.Playing(session_id).to_json())

        async def ended(reason: str) -> None:
            ending = self.sessions.pop(session_id, None)
            if ending is not None:
                await self._close(ending, reason)  # one that failed before DTLS never closes itself
                await _send_end(ws, session_id, reason)

        async def game_ended(how: GameExit) -> None:
            """The game exited on its own: end the session in a task of the agent's (ending
            it stops the game's process, whose watcher is what calls this)."""
            self.game_exits.append((session_id, how))
            if build is not None:
                name, version = build.name, build.manifest.version
                self.reports.add(game_report(session_id, name, version, build.sha256, how))
            log.warning("container %s: %s", cfg.container_id, how.describe())
            self._owned(ended(how.describe()))

        frames: WindowFrames | None = None
        if build is not None:
            run = await self._build_run(build, game_ended, stale=bool(altered))
            if isinstance(run, str):
                await _send_end(ws, session_id, run)
                return
            self._runs[session_id] = run
            frames = run.stream(mark=offer.marker)
        session = StreamSession(session_id, options, playing, ended, frames)
        self.sessions[session_id] = session
        try:
            answer = await session.accept(offer.sdp)
        except (
            Exception
        ) as exc:  # aiortc reports bad SDP as ValueError, KeyError, OperationError...
            log.warning(
                "container %s: unusable offer for %s: %r", self.config.container_id, session_id, exc
            )
            self.sessions.pop(session_id, None)
            await self._close(session, str(exc))
            await _send_end(ws, session_id, f"cannot use the offer: {exc}")
            return
        await ws.send_str(p.Answer(session_id, answer).to_json())

    async def _build_run(
        self, build: DeployedBuild, on_exit: Callable[[GameExit], Awaitable[None]], *, stale: bool
    ) -> BuildRun | str:
        """The run a session of `build` plays: the one waiting for a player (unless `stale`:
        the build's tree changed since it started), else one started now; or why none can."""
        if self.sandbox is None and not self.config.unsafe_no_sandbox:
            return f"cannot start {build.name}: {self.sandbox_refusal}"
        if self.standby is not None:
            if stale:
                self.standby.discard(build.name)
            run = await self.standby.take(build.name)
            if run is not None and run.game.running:
                run.on_exit = on_exit
                log.info("container %s: %s's waiting run taken (game pid %s)",
                         self.config.container_id, build.name, run.pid)  # fmt: skip
                return run
            if run is not None:  # its game ended as it was taken
                await run.stop()
        run = BuildRun(build, sandbox=self.sandbox, on_exit=on_exit)
        try:
            await run.start()
        except Exception as exc:  # no display, a game that will not start...
            return f"cannot start {build.name}: {exc}"
        return run

    def _warm_pool(self) -> contextlib.AbstractAsyncContextManager[WarmPool]:
        """Waiting runs of the builds this host can run (none where builds may not run)."""
        runnable = self.sandbox is not None or self.config.unsafe_no_sandbox
        return WarmPool(
            self.builds if runnable else {},
            sandbox=self.sandbox,
            verify=lambda build: verify_build(build, self._build_fault),
            on_exit=self._standby_exited,
        )

    def _standby_exited(self, name: str, how: GameExit) -> None:
        """A waiting game ended on its own: recorded and reported as a session's game is."""
        self.game_exits.append((f"standby:{name}", how))
        build = self.builds.get(name)
        if build is not None:
            version = build.manifest.version
            self.reports.add(game_report("", name, version, build.sha256, how))
        log.warning("container %s: standby %s: %s", self.config.container_id, name,
                    how.describe())  # fmt: skip

    async def _end_session(self, session_id: str, reason: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            await self._close(session, reason)

    async def _close(self, session: StreamSession, reason: str) -> None:
        """Close a session's peer in a task of its own, which a cancelled agent still awaits."""
        await asyncio.shield(self._owned(self._shut(session, reason)))

    def _owned(self, work: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        """Run `work` in a task the agent owns: awaited before the agent stops or reconnects,
        whoever asked for it (a cancelled session, a game process's watcher)."""
        task = asyncio.ensure_future(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    async def _shut(self, session: StreamSession, reason: str) -> None:
        """The peer first, then the build's run behind it (capture, input, game, display)."""
        try:
            await session.close(reason)
        finally:
            run = self._runs.pop(session.session_id, None)
            try:
                if run is not None:
                    await run.stop()
            finally:
                if self.standby is not None and not self._stopping:
                    self.standby.session_ended(session.session_id)  # a fresh run follows

    async def _close_sessions(self, reason: str) -> None:
        for session_id in list(self.sessions):
            await self._end_session(session_id, reason)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _raise_if_stopping() -> None:
    """Stop where a cancel was lost: on Python 3.11 a TaskGroup whose child failed while it
    was being cancelled raises the child's error alone, which a reconnect loop would catch and
    go round again, forever, with its owner awaiting it."""
    if _cancelling():
        raise asyncio.CancelledError


async def _send_end(ws: aiohttp.ClientWebSocketResponse, session_id: str, reason: str) -> None:
    """Tell the indexer a session ended; the reason is cut to the protocol's limit (a crash's
    stderr line or Xvfb's log would otherwise get the whole message refused)."""
    await ws.send_str(p.End(session_id, reason[: p.MAX_TEXT]).to_json())
