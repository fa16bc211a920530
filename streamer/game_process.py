"""A game build's process, supervised: started on our display, watched, and always cleaned up.

The build runs in its own session, hence its own process group, so that stopping it reaches
every process it started (a launcher script and its game, a crash reporter) and nothing of
ours. Its stdout and stderr are drained continuously (a full pipe would freeze the game) and
their last lines kept, so that when it dies on its own the exit can say why: the exit code or
signal and the last lines it wrote to stderr. That `GameExit` is what `wait()` returns and
what `on_crash` receives; the session turns it into the player's message and the record.

Stopping sends SIGTERM to the group, then SIGKILL to whatever is left after a grace period;
an exit on its own is followed by the same sweep of the group, so no helper outlives it. A
helper that leaves the group (its own session) is beyond that sweep, as it is beyond any
signal-based supervisor: only a cgroup would hold it. It delays nothing here, though: the
output pipes are ours, so neither the exit nor its report waits for them to close.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamer.errors import StreamerError
from streamer.started import Started

TAIL_LINES = 40
MAX_LINE_CHARS = 400  # a runaway line (a progress bar without newlines) is cut, not kept whole
STOP_GRACE_S = 5.0
DRAIN_LIMIT_S = 1.0  # for output still in the pipes once the group is gone
_SWEEP_POLL_S = 0.02


class GameProcessError(StreamerError, RuntimeError):
    """The build could not be started, or was used out of order; the message says which."""


class OutputTail:
    """The last `lines` lines of a byte stream fed in arbitrary chunks."""

    def __init__(self, lines: int = TAIL_LINES) -> None:
        self._lines: deque[str] = deque(maxlen=lines)
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        self._partial = self._partial[-MAX_LINE_CHARS * 4 :]  # 4: the widest UTF-8 character
        for line in complete[-(self._lines.maxlen or 0) :]:  # a flood of lines costs one slice
            self._lines.append(_text(line))

    def lines(self) -> tuple[str, ...]:
        """The kept lines, oldest first, with an unfinished last line included."""
        tail = [*self._lines, _text(self._partial)] if self._partial else list(self._lines)
        return tuple(tail[-(self._lines.maxlen or 0) :])


def _text(line: bytes) -> str:
    return line.decode(errors="replace").rstrip("\r")[:MAX_LINE_CHARS]


@dataclass(frozen=True, slots=True)
class GameExit:
    """How the build's process ended; `returncode` is negative for a signal (-9: SIGKILL)."""

    returncode: int
    stderr_tail: tuple[str, ...]
    requested: bool  # we stopped it; anything else is the build's own doing
    limit: str = ""  # the sandbox's limit that ended it, where known (sandbox.py limit_of)

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None

    @property
    def crashed(self) -> bool:
        """It ended on its own and not with exit code 0 (a clean quit is not a crash)."""
        return not self.requested and self.returncode != 0

    def describe(self) -> str:
        """One line for the player and the record: how it ended and its last stderr line."""
        if self.signal is not None:
            how = f"was killed by {signal.Signals(self.signal).name}"
        else:
            how = f"exited with code {self.returncode}"
        if self.limit:
            how += f" at its {self.limit.replace('_', ' ')} limit"
        if self.requested:
            return f"the game was stopped ({how})"
        last = next((line for line in reversed(self.stderr_tail) if line.strip()), None)
        verdict = "crashed" if self.crashed else "quit"
        return f"the game {verdict}: it {how}" + (f": {last.strip()}" if last else "")


class GameProcess(Started):
    """One run of a build's entry on X display `display`; an async context manager.

    `on_crash` is awaited (from a task this object owns) when the process ends on its own,
    crash or clean quit alike: check `GameExit.crashed`. `wait()` returns the same GameExit
    however it ended.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        display: str,
        env: Mapping[str, str] | None = None,
        on_crash: Callable[[GameExit], Awaitable[None]] | None = None,
        stop_grace: float = STOP_GRACE_S,
        pass_fds: Sequence[int] = (),
        exit_status: Callable[[int], int] = lambda returncode: returncode,
    ) -> None:
        """`argv` as `Manifest.command` returns it, or a sandbox's command around it
        (streamer/sandbox_host.py), which also gives `pass_fds` and how its `exit_status`
        reads; `env` is the base environment (default: ours) to which DISPLAY and
        SDL_VIDEODRIVER=x11 are added."""
        if not argv:
            raise GameProcessError("no program to run: argv is empty")
        self.argv = list(argv)
        self.cwd = cwd
        self.env = {**(os.environ if env is None else env), "DISPLAY": display,
                    "SDL_VIDEODRIVER": "x11"}  # fmt: skip
        self.stdout = OutputTail()
        self.stderr = OutputTail()
        self._on_crash = on_crash
        self._stop_grace = stop_grace
        self._pass_fds = tuple(pass_fds)
        self._exit_status = exit_status
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[GameExit] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        if self._process is not None:
            raise GameProcessError("the game process was already started")
        # Our own pipes, not asyncio's: with those, Process.wait() (Python 3.11) also waits
        # for every copy of them to close, which a helper of the game could hold forever.
        (out_read, out_write), (err_read, err_write) = os.pipe(), os.pipe()
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                start_new_session=True,  # its own process group, with the pid as its id
                pass_fds=self._pass_fds,
            )
        except OSError as exc:
            os.close(out_read)
            os.close(err_read)
            raise GameProcessError(f"cannot start {self.argv[0]!r} in {self.cwd}: {exc}") from exc
        finally:
            os.close(out_write)
            os.close(err_write)
        readers = [
            await _TailReader.attach(out_read, self.stdout),
            await _TailReader.attach(err_read, self.stderr),
        ]
        self._watcher = asyncio.create_task(
            self._watch(self._process, readers), name="gamecast-game"
        )

    async def wait(self) -> GameExit:
        """The process's exit, once it and its output are finished."""
        if self._watcher is None:
            raise GameProcessError("the game process was never started")
        return await asyncio.shield(self._watcher)

    async def stop(self) -> GameExit | None:
        """SIGTERM the process group, SIGKILL it after the grace period; None if never started."""
        if self._process is None:
            return None
        if self._watcher is None:  # spawned, never watched (start was cancelled)
            await _end_group(self._process.pid, self._stop_grace)
            return None
        if not self._watcher.done():
            self._stopping = True
            await _end_group(self._process.pid, self._stop_grace)
        return await self.wait()

    async def _watch(
        self, process: asyncio.subprocess.Process, readers: list[_TailReader]
    ) -> GameExit:
        returncode = self._exit_status(await process.wait())
        requested = self._stopping  # a stop that comes later finds it ended on its own
        await _end_group(process.pid, self._stop_grace)  # helpers it left behind
        # Their copies of the pipes are closed now, unless one escaped the group.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(r.closed for r in readers)), DRAIN_LIMIT_S)
        for reader in readers:
            reader.close()
        ended = GameExit(returncode, self.stderr.lines(), requested=requested)
        if not ended.requested and self._on_crash is not None:
            await self._on_crash(ended)
        return ended


class _TailReader(asyncio.Protocol):
    """Reads one of the game's output pipes into an OutputTail until every writer closes it."""

    def __init__(self, tail: OutputTail) -> None:
        self.tail = tail
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.BaseTransport | None = None

    @classmethod
    async def attach(cls, read_end: int, tail: OutputTail) -> _TailReader:
        reader = cls(tail)
        pipe = os.fdopen(read_end, "rb", buffering=0)
        loop = asyncio.get_running_loop()
        reader._transport, _ = await loop.connect_read_pipe(lambda: reader, pipe)
        return reader

    def data_received(self, data: bytes) -> None:
        self.tail.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _end_group(group: int, grace: float) -> None:
    """SIGTERM every process of `group`, SIGKILL what still lives after `grace` seconds."""
    if not _signal_group(group, signal.SIGTERM):
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            # Scanning /proc takes milliseconds on a busy host: off the event loop.
            while await asyncio.to_thread(live_members, group):  # noqa: ASYNC110
                await asyncio.sleep(_SWEEP_POLL_S)
            return
    _signal_group(group, signal.SIGKILL)


def _signal_group(group: int, signum: int) -> bool:
    """Send `signum` to the group; False when no process of it is left to receive it."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    return True


def live_members(group: int, proc: Path = Path("/proc")) -> list[int]:
    """The pids of the processes of `group` that still run (zombies excluded).

    Not `killpg(group, 0)`: a zombie still counts for that, and an orphan's zombie lingers
    where the host's init does not reap (a container whose PID 1 is not an init).
    """
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it exited while we looked
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members
