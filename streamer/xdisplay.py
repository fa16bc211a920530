"""A virtual X display of our own: an Xvfb process that a game build draws on.

Xvfb picks a free display number itself (`-displayfd`: it tries :0, :1, ... until one is
free, takes its lock file, and writes the number to the descriptor once it accepts
connections), so several containers, or tests, on one host never race for a number. We
still connect to its socket before handing it out: that is the promise callers rely on.
The server runs with no TCP listener and `-noreset`, so the display survives the game's
last client disconnecting (a crashed game is restarted on the same display).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import IO

from streamer.errors import StreamerError
from streamer.started import Started

XVFB = Path("/usr/bin/Xvfb")  # Debian's package xvfb
DEPTH = 24  # 24-bit TrueColor: x11grab then reads bgr0, which swscale converts fastest
X11_SOCKETS = Path("/tmp/.X11-unix")
STARTUP_LIMIT_S = 10.0
STOP_GRACE_S = 5.0


class XDisplayError(StreamerError, RuntimeError):
    """Xvfb is missing, did not start, or did not accept connections; the message says why."""


def xvfb_unavailable_reason(xvfb: Path = XVFB) -> str | None:
    """Why no virtual display can be started here, or None when it can."""
    if not xvfb.exists():
        return f"{xvfb} is missing (Debian: apt-get install xvfb)"
    if not os.access(xvfb, os.X_OK):
        return f"{xvfb} is not executable"
    return None


class XvfbDisplay(Started):
    """An owned Xvfb server with one screen of `width` x `height`; an async context manager.

    `name` (":N") is what DISPLAY, x11grab and python-xlib take. Leaving the context stops the
    server (SIGTERM, SIGKILL after `STOP_GRACE_S`) and reaps it.
    """

    def __init__(
        self, width: int, height: int, *, xvfb: Path = XVFB, startup_limit: float = STARTUP_LIMIT_S
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"a display needs a positive size, got {width}x{height}")
        self.width = width
        self.height = height
        self._xvfb = xvfb
        self._startup_limit = startup_limit
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._number: int | None = None

    @property
    def name(self) -> str:
        if self._number is None:
            raise XDisplayError("the display is not started (use `async with XvfbDisplay(...)`)")
        return f":{self._number}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Start Xvfb and return once a client can connect to it."""
        if self._process is not None:
            raise XDisplayError("the display is already started")
        reason = xvfb_unavailable_reason(self._xvfb)
        if reason is not None:
            raise XDisplayError(f"cannot start a virtual display: {reason}")
        # Xvfb's warnings, read back only on failure; open as long as the server runs.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        read_end, write_end = os.pipe()
        try:
            self._process = await asyncio.create_subprocess_exec(
                str(self._xvfb),
                "-displayfd", str(write_end),
                "-screen", "0", f"{self.width}x{self.height}x{DEPTH}",
                "-nolisten", "tcp",
                "-noreset",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                pass_fds=(write_end,),
            )  # fmt: skip
        finally:
            os.close(write_end)  # ours; Xvfb holds its copy, so EOF here means it died
        try:
            async with asyncio.timeout(self._startup_limit):
                self._number = await _read_display_number(read_end)
                await _wait_for_socket(X11_SOCKETS / f"X{self._number}")
        except (TimeoutError, XDisplayError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                detail = f"it did not accept connections within {self._startup_limit:g} s"
            else:
                detail = str(exc)
            log = self._log_tail()
            await self.stop()
            raise XDisplayError(f"Xvfb failed to start: {detail}; its log: {log}") from None

    async def stop(self) -> None:
        """Stop the server and reap it; safe to call twice, or after a failed start."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._number = None

    def _log_tail(self) -> str:
        if self._log is None:
            return "(none)"
        self._log.seek(0)
        text = self._log.read().decode(errors="replace").strip()
        return text[-1000:] or "(empty)"


async def _read_display_number(read_end: int) -> int:
    """The number Xvfb writes to -displayfd once it accepts connections."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(read_end, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        line = await reader.readline()
    finally:
        transport.close()
    if not line.strip().isdigit():
        raise XDisplayError("it exited before choosing a display")
    return int(line)


async def _wait_for_socket(path: Path) -> None:
    """Connect to the display's Unix socket until it answers (it is the clients' way in).

    Xvfb on Linux listens both on the file and on the abstract name "\\0" + path (the file
    is missing where /tmp/.X11-unix is not writable); either will do.
    """
    while True:
        for address in (str(path), "\0" + str(path)):
            try:
                _, writer = await asyncio.open_unix_connection(address)
            except OSError:
                continue
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.01)
