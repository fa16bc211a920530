"""A virtual X display of our own: an Xvfb process that a game build draws on.

Xvfb picks a free display number itself (`-displayfd`: it tries :0, :1, ... until one is
free, takes its lock file, and writes the number to the descriptor once it accepts
connections), so several containers, or tests, on one host never race for a number. We
still connect to its socket before handing it out: that is the promise callers rely on.
The server runs with no TCP listener and `-noreset`, so the display survives the game's
last client disconnecting (a crashed game is restarted on the same display).

Access control: each display gets a fresh 16-byte MIT-MAGIC-COOKIE-1 (`-auth FILE`), so a
client that reaches its socket without the cookie is refused ("Authorization required").
`xauthority` is that file, which the session's sandbox binds in for its game; this process's
own clients (XTEST input, x11grab capture, tests) find the cookies of every display it owns in
one private file that XAUTHORITY names in this process's environment (`AgentCookies`): both
python-xlib and libxcb read XAUTHORITY when they connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO

from streamer.errors import StreamerError
from streamer.started import Started
from streamer.xauthority import cookie_file

XVFB = Path("/usr/bin/Xvfb")  # Debian's package xvfb
DEPTH = 24  # 24-bit TrueColor: x11grab then reads bgr0, which swscale converts fastest
X11_SOCKETS = Path("/tmp/.X11-unix")
STARTUP_LIMIT_S = 10.0
XVFB_BASE_BYTES = 1 << 30  # Xvfb's own mappings and a game's reasonable pixmaps, past its screen
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


class AgentCookies:
    """The cookies of the displays this process owns, in one Xauthority file of its own that
    XAUTHORITY names (set when the first display starts). Rewritten whole and renamed into
    place, so a client connecting meanwhile reads the old file or the new, never half."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cookies: dict[str, bytes] = {}
        self._folder: Path | None = None

    @property
    def path(self) -> Path:
        with self._lock:
            return self._ensure_folder() / "Xauthority"

    def add(self, number: int, cookie: bytes) -> None:
        with self._lock:
            self._cookies[str(number)] = cookie
            self._write()

    def remove(self, number: int) -> None:
        with self._lock:
            if self._cookies.pop(str(number), None) is not None:
                self._write()

    def _ensure_folder(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="gamecast-xauth-"))  # mode 0700
        return self._folder

    def _write(self) -> None:
        folder = self._ensure_folder()
        staged = folder / "Xauthority.new"
        staged.write_bytes(cookie_file(self._cookies, socket.gethostname()))
        staged.chmod(0o600)
        staged.replace(folder / "Xauthority")
        os.environ["XAUTHORITY"] = str(folder / "Xauthority")


AGENT_COOKIES = AgentCookies()


class XvfbDisplay(Started):
    """An owned Xvfb server with one screen of `width` x `height`; an async context manager.

    `name` (":N") is what DISPLAY, x11grab and python-xlib take; `xauthority` the file with
    its cookie alone, for its game. Leaving the context stops the server (SIGTERM, SIGKILL
    after `STOP_GRACE_S`), reaps it and forgets the cookie.
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
        self._auth_folder: Path | None = None

    @property
    def xauthority(self) -> Path:
        if self._auth_folder is None or self._number is None:
            raise XDisplayError("the display is not started (use `async with XvfbDisplay(...)`)")
        return self._auth_folder / "Xauthority"

    @property
    def number(self) -> int:
        if self._number is None:
            raise XDisplayError("the display is not started (use `async with XvfbDisplay(...)`)")
        return self._number

    @property
    def name(self) -> str:
        if self._number is None:
            raise XDisplayError("the display is not started (use `async with XvfbDisplay(...)`)")
        return f":{self._number}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def address_space_bytes(self) -> int:
        """Xvfb's address-space limit: its screen, twice over, and XVFB_BASE_BYTES."""
        return XVFB_BASE_BYTES + 2 * self.width * self.height * 4

    async def start(self) -> None:
        """Start Xvfb and return once a client can connect to it."""
        if self._process is not None:
            raise XDisplayError("the display is already started")
        reason = xvfb_unavailable_reason(self._xvfb)
        if reason is not None:
            raise XDisplayError(f"cannot start a virtual display: {reason}")
        # Xvfb's warnings, read back only on failure; open as long as the server runs.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        cookie = secrets.token_bytes(16)
        self._auth_folder = Path(tempfile.mkdtemp(prefix="gamecast-display-"))  # mode 0700
        server_auth = self._auth_folder / "Xauthority"
        server_auth.touch(mode=0o600)
        server_auth.write_bytes(cookie_file({"": cookie}, socket.gethostname()))
        read_end, write_end = os.pipe()
        try:
            self._process = await asyncio.create_subprocess_exec(
                # The game asks this server for pixmaps: bound what they can cost the host
                # (the game's own sandbox limits do not reach its X server).
                "/usr/bin/prlimit", f"--as={self.address_space_bytes}", "--",
                str(self._xvfb),
                "-displayfd", str(write_end),
                "-screen", "0", f"{self.width}x{self.height}x{DEPTH}",
                "-nolisten", "tcp",
                "-noreset",
                "-auth", str(server_auth),
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
                AGENT_COOKIES.add(self._number, cookie)
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
        if self._number is not None:
            AGENT_COOKIES.remove(self._number)
        if self._auth_folder is not None:
            shutil.rmtree(self._auth_folder, ignore_errors=True)
            self._auth_folder = None
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
