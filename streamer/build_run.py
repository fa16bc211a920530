"""One session's run of a deployed build: its own X display, the game, input and capture.

Each session gets a fresh Xvfb at the manifest's resolution with a cookie of its own
(streamer/xdisplay.py), the build's entry started on it (streamer/game_process.py) inside the
session's sandbox (streamer/sandbox_host.py: its own namespaces, no network, the build
read-only, only that display's socket and cookie, seccomp, limits), XTEST input
(streamer/x_input.py) and a capture at the manifest's fps (streamer/window_capture.py), handed
to the session's track as `WindowFrames`. They stop in the reverse order, whatever ended the
session, and the sandbox's cgroups are emptied last; a game that exits on its own calls
`on_exit` with how it ended (a crash: exit code or signal and its last stderr lines; in a
sandbox, the limit that ended it where its cgroups recorded one: streamer/sandbox.py limit_of).

`BuildRun` is that run as an object started before anyone plays it: a container keeps one
waiting per build (streamer/warm_pool.py) with everything up but the capture, whose thread
starts in `stream()`, when a session takes the run (it opens while the peer connects, and a
waiting run grabs no frames nobody sees). `on_exit` may be handed to the session then.
`pause` stops every process of the game's sandbox (SIGSTOP) so that a waiting game costs no
CPU; `resume`, and `stop` too (a stopped process does not act on SIGTERM), continue them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import psutil

from streamer.deploy import DeployedBuild
from streamer.errors import StreamerError
from streamer.game_process import GameExit, GameProcess
from streamer.sandbox import BUILD_MOUNT, SandboxLimits, exit_status, limit_of
from streamer.sandbox_host import GameSandbox, SandboxHost
from streamer.started import Started
from streamer.window_capture import WindowCapture, WindowFrames
from streamer.x_input import XTestInput
from streamer.xdisplay import XvfbDisplay


def _unsandboxed_env(build: DeployedBuild, xauthority: str) -> dict[str, str]:
    """Without a sandbox (`--unsafe-no-sandbox`) a build still sees a bare environment, not
    the agent's (which may name its host key's file or other secrets)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(build.path),
        "XAUTHORITY": xauthority,
    }


OnExit = Callable[[GameExit], Awaitable[None]]


class BuildRunError(StreamerError, RuntimeError):
    """A run used out of order (streamed before it started, or twice)."""


class BuildRun(Started):
    """One run of `build`: its display, sandbox, game and XTEST input once started (`async
    with` or `start`), its capture once `stream` is called; everything stopped by `stop`.

    `on_exit` (settable: whoever holds the run) is awaited when the game ends on its own.
    `sandbox`: this host's, from `probe_sandbox`; None runs the game unconfined, which only
    the operator may choose. `start_ms` says what each step of the start took.
    """

    def __init__(
        self, build: DeployedBuild, *, sandbox: SandboxHost | None, on_exit: OnExit | None = None
    ) -> None:
        self.build = build
        self.sandbox = sandbox
        self.on_exit = on_exit
        self.start_ms: dict[str, float] = {}  # display, sandbox, game, input: in that order
        self._stack: contextlib.AsyncExitStack | None = None
        self._game: GameProcess | None = None
        self._display: XvfbDisplay | None = None
        self._frames: WindowFrames | None = None
        self._capture: WindowCapture | None = None
        self._streaming = False
        self._paused = False
        self._stopped_pids: set[int] = set()  # what pause stopped: resume continues them

    @property
    def game(self) -> GameProcess:
        if self._game is None:
            raise BuildRunError(f"the run of {self.build.name} is not started")
        return self._game

    @property
    def display(self) -> XvfbDisplay:
        if self._display is None:
            raise BuildRunError(f"the run of {self.build.name} is not started")
        return self._display

    @property
    def pid(self) -> int | None:
        """The game's process (the sandbox's outermost), once started."""
        return None if self._game is None else self._game.pid

    @property
    def streaming(self) -> bool:
        return self._streaming

    @property
    def paused(self) -> bool:
        return self._paused

    async def pause(self) -> int:
        """SIGSTOP the game's sandbox, every process of it; returns how many were stopped."""
        if self._game is None or self._game.pid is None:
            raise BuildRunError(f"the run of {self.build.name} is not started")
        if not self._game.running:  # its pid may be another process's by now
            return 0
        self._paused = True
        stopped = await asyncio.to_thread(_signal_tree, self._game.pid, signal.SIGSTOP)
        self._stopped_pids |= stopped
        return len(stopped)

    def resume(self) -> None:
        """SIGCONT what `pause` stopped: no scan (a stopped process cannot fork), so it costs
        the Play path microseconds. After a pause that raced it, call it again."""
        self._paused = False
        stopped, self._stopped_pids = self._stopped_pids, set()  # continued once, never again
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    async def start(self) -> None:
        if self._stack is not None:
            raise BuildRunError(f"the run of {self.build.name} was already started")
        self._stack = contextlib.AsyncExitStack()
        try:
            await self._start(self._stack)
        except BaseException:  # failed or cancelled halfway: nothing started may outlive it
            await asyncio.shield(self.stop())
            raise

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        build, manifest = self.build, self.build.manifest
        width, height = manifest.width, manifest.height
        began = time.perf_counter()

        def lap(step: str) -> None:
            nonlocal began
            now = time.perf_counter()
            self.start_ms[step] = round((now - began) * 1000, 2)
            began = now

        self._display = display = await stack.enter_async_context(XvfbDisplay(width, height))
        lap("display")
        if self.sandbox is None:
            argv = manifest.command(str(build.path), sys.executable)
            env = _unsandboxed_env(build, str(display.xauthority))
            game = GameProcess(argv, cwd=build.path, display=display.name, env=env,
                               on_crash=self._exited)  # fmt: skip
        else:
            argv = manifest.command(str(BUILD_MOUNT), sys.executable)  # where the jail has it
            needs = manifest.requires
            limits = SandboxLimits.for_needs(needs.ram_mib, needs.cpu_cores)
            jail = GameSandbox(
                self.sandbox, argv, build_dir=build.path, display=display.number,
                xauthority=display.xauthority, session_name=f"{build.name}-{secrets.token_hex(4)}",
                limits=limits, gpu=needs.gpu,
            )  # fmt: skip
            await stack.enter_async_context(jail)

            async def exited(how: GameExit, jail: GameSandbox = jail) -> None:
                """With the limit that ended it, read from its cgroups before they go."""
                reached = await asyncio.to_thread(jail.limits_reached)
                await self._exited(dataclasses.replace(how, limit=limit_of(how.signal, reached)))

            game = GameProcess(
                jail.command, cwd=build.path, display=display.name, env={}, on_crash=exited,
                pass_fds=jail.pass_fds, exit_status=exit_status,
            )  # fmt: skip
        lap("sandbox")
        self._game = await stack.enter_async_context(game)
        lap("game")
        x_input = await stack.enter_async_context(XTestInput(display.name, width, height))
        lap("input")
        self._capture = WindowCapture(
            display.name, width, height, manifest.fps, x_input.log.sequence_before
        )
        self._frames = WindowFrames(self._capture, x_input, mark=True)

    def stream(self, *, mark: bool = True) -> WindowFrames:
        """Start capturing (an owned thread) and return the frames for a session's track,
        with the marker painted when `mark`. Once per run."""
        if self._stack is None or self._frames is None or self._capture is None:
            raise BuildRunError(f"the run of {self.build.name} is not started")
        if self._streaming:
            raise BuildRunError(f"the run of {self.build.name} is already streamed")
        self._streaming = True
        self._frames.mark = mark
        capture = self._capture
        capture.start()
        self._stack.push_async_callback(asyncio.to_thread, capture.stop)  # stopped first
        return self._frames

    async def stop(self) -> None:
        """Capture, input, game, sandbox, display: in that order; safe to call twice."""
        stack, self._stack = self._stack, None
        if stack is not None:
            self.resume()  # first: a paused game would wait out SIGTERM's grace
            await stack.aclose()

    async def _exited(self, how: GameExit) -> None:
        if self.on_exit is not None:
            await self.on_exit(how)


def _signal_tree(root: int, signum: int) -> set[int]:
    """Send `signum` to `root` and its descendants, listed again until no new one appears (a
    process forking meanwhile); the pids that received it. Blocking: scans /proc."""
    sent: set[int] = set()
    while True:
        try:
            top = psutil.Process(root)
            tree = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return sent
        fresh = [process for process in tree if process.pid not in sent]
        if not fresh:
            return sent
        for process in fresh:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signum)
            sent.add(process.pid)


@contextlib.asynccontextmanager
async def build_frames(
    build: DeployedBuild,
    on_exit: OnExit,
    *,
    sandbox: SandboxHost | None,
    mark: bool = True,
) -> AsyncIterator[WindowFrames]:
    """Run `build` until the block exits; yields its window as a track's frames, with the frame
    marker painted in when `mark` (the session asked for it). `sandbox` as for `BuildRun`."""
    async with BuildRun(build, sandbox=sandbox, on_exit=on_exit) as run:
        yield run.stream(mark=mark)
