"""One session's run of a deployed build: its own X display, the game, input and capture.

Each session gets a fresh Xvfb at the manifest's resolution, the build's entry started on it
(streamer/game_process.py), XTEST input (streamer/x_input.py) and a capture at the manifest's
fps (streamer/window_capture.py), handed to the session's track as `WindowFrames`. They stop in
the reverse order, whatever ended the session; a game that exits on its own calls
`on_exit` with how it ended (a crash: exit code or signal and its last stderr lines).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from streamer.deploy import DeployedBuild
from streamer.game_process import GameExit, GameProcess, resolve_entry
from streamer.window_capture import WindowCapture, WindowFrames
from streamer.x_input import XTestInput
from streamer.xdisplay import XvfbDisplay


def _game_env(build: DeployedBuild) -> dict[str, str]:
    """A build sees a bare environment, not the agent's (which may name its host key's file or
    other secrets); it still runs as the agent's user (README: not isolated)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(build.path),
    }


@contextlib.asynccontextmanager
async def build_frames(
    build: DeployedBuild, on_exit: Callable[[GameExit], Awaitable[None]], *, mark: bool = True
) -> AsyncIterator[WindowFrames]:
    """Run `build` until the block exits; yields its window as a track's frames, with the frame
    marker painted in when `mark` (the session asked for it)."""
    manifest = build.manifest
    width, height = manifest.width, manifest.height
    async with contextlib.AsyncExitStack() as stack:
        display = await stack.enter_async_context(XvfbDisplay(width, height))
        argv = resolve_entry(manifest.entry)
        game = GameProcess(
            argv, cwd=build.path, display=display.name, env=_game_env(build), on_crash=on_exit
        )
        await stack.enter_async_context(game)
        x_input = await stack.enter_async_context(XTestInput(display.name, width, height))
        capture = WindowCapture(
            display.name, width, height, manifest.fps, x_input.log.sequence_before
        )
        await stack.enter_async_context(capture)
        yield WindowFrames(capture, x_input, mark=mark)
