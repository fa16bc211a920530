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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

from streamer.deploy import DeployedBuild
from streamer.game_process import GameExit, GameProcess
from streamer.sandbox import BUILD_MOUNT, SandboxLimits, exit_status, limit_of
from streamer.sandbox_host import GameSandbox, SandboxHost
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


@contextlib.asynccontextmanager
async def build_frames(
    build: DeployedBuild,
    on_exit: Callable[[GameExit], Awaitable[None]],
    *,
    sandbox: SandboxHost | None,
    mark: bool = True,
) -> AsyncIterator[WindowFrames]:
    """Run `build` until the block exits; yields its window as a track's frames, with the frame
    marker painted in when `mark` (the session asked for it). `sandbox`: this host's, from
    `probe_sandbox`; None runs the game unconfined, which only the operator may choose."""
    manifest = build.manifest
    width, height = manifest.width, manifest.height
    async with contextlib.AsyncExitStack() as stack:
        display = await stack.enter_async_context(XvfbDisplay(width, height))
        if sandbox is None:
            argv = manifest.command(str(build.path), sys.executable)
            env = _unsandboxed_env(build, str(display.xauthority))
            game = GameProcess(argv, cwd=build.path, display=display.name, env=env,
                               on_crash=on_exit)  # fmt: skip
        else:
            argv = manifest.command(str(BUILD_MOUNT), sys.executable)  # where the jail has it
            needs = manifest.requires
            limits = SandboxLimits.for_needs(needs.ram_mib, needs.cpu_cores)
            jail = GameSandbox(
                sandbox, argv, build_dir=build.path, display=display.number,
                xauthority=display.xauthority, session_name=f"{build.name}-{secrets.token_hex(4)}",
                limits=limits, gpu=needs.gpu,
            )  # fmt: skip
            await stack.enter_async_context(jail)

            async def exited(how: GameExit, jail: GameSandbox = jail) -> None:
                """With the limit that ended it, read from its cgroups before they go."""
                reached = await asyncio.to_thread(jail.limits_reached)
                await on_exit(dataclasses.replace(how, limit=limit_of(how.signal, reached)))

            game = GameProcess(
                jail.command, cwd=build.path, display=display.name, env={}, on_crash=exited,
                pass_fds=jail.pass_fds, exit_status=exit_status,
            )  # fmt: skip
        await stack.enter_async_context(game)
        x_input = await stack.enter_async_context(XTestInput(display.name, width, height))
        capture = WindowCapture(
            display.name, width, height, manifest.fps, x_input.log.sequence_before
        )
        await stack.enter_async_context(capture)
        yield WindowFrames(capture, x_input, mark=mark)
