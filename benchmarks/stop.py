"""`gamecast bench stop`: how long `gamecast up` takes to exit after Ctrl-C or SIGTERM, in each
state it can be in (target: 2 s each, issue 13).

Each run starts `gamecast up` (its capacity set, so a busy machine cannot refuse it), brings it
into the state, sends the signal and times the exit: idle; a player's session playing (the
aiortc bot); its verifier's bot session in flight (a verifier check: the first one after the
registration check); right after a player's session ended.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from benchmarks.report import limit, machine, print_end, print_limits
from node.console import table
from verifier.bot import BotPlayer

GAMECAST = [sys.executable, "-m", "gamecast"]
TARGET_S = 2.0
GIVE_UP_S = 30.0  # a stop slower than this is a hang: the process is killed and reported
COLUMNS = (
    ("state", "state", "{}"), ("signal", "signal", "{}"), ("seconds", "exit after (s)", "{:.2f}"),
    ("status", "exit status", "{}"), ("stopped", "printed stopped", "{}"),
)  # fmt: skip


class Running:
    """A `gamecast` subprocess whose merged output is read as it comes."""

    def __init__(self, *argv: str) -> None:
        self.process = subprocess.Popen(
            [*GAMECAST, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first match of `pattern` in the output, waiting for it to appear."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (match := re.search(pattern, self.output)):
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise RuntimeError(f"no {pattern!r} in:\n{self.output}")
                self._changed.wait(min(left, 0.2))
        return match

    def signal_and_wait(self, signum: signal.Signals, timeout: float) -> float | None:
        """Send `signum`; the seconds until the process exited, or None (killed) past `timeout`."""
        start = time.monotonic()
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        took = time.monotonic() - start
        self._close()
        return took

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close()

    def _close(self) -> None:
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def up(verifiers: int = 0) -> Running:
    """`gamecast up` on a free port; its capacity set, so a busy machine cannot refuse it."""
    return Running("up", "--port", "0", "--capacity", "2", "--verifiers", str(verifiers))


def url_of(process: Running) -> str:
    return process.wait_for(r"(?:open|listening on) (http://127\.0\.0\.1:\d+)/")[1]


@asynccontextmanager
async def playing(server_url: str) -> AsyncIterator[BotPlayer]:
    """A player (the aiortc bot) whose session plays, frames arriving."""
    bot = BotPlayer(server_url.replace("http", "ws", 1) + "/ws/player")
    async with aiohttp.ClientSession() as http, bot.play(http, "reference", 640, 360, 30):
        async with asyncio.timeout(20):
            await bot.wait_frames(5)
        yield bot


STATES = ("idle", "session playing", "bot session in flight", "right after a session ended")


async def stopped_in(
    state: str, stop: Callable[[Running], Awaitable[float | None]]
) -> tuple[Running, float | None]:
    """Start `gamecast up`, bring it into `state` (one of STATES) and `stop` it; the process
    and what `stop` returned."""
    process = up(verifiers=1 if state == "bot session in flight" else 0)
    try:
        url = url_of(process)
        process.wait_for(r"API: ")
        if state == "session playing":
            async with playing(url):
                return process, await stop(process)
        if state == "bot session in flight":
            process.wait_for(r"registration check passed")
            process.wait_for(r"x264 encoder: 1280x720@60")  # the bot's session streams
            await asyncio.sleep(1.5)  # into its trace (1 s warm-up, then 8 s of input)
        elif state == "right after a session ended":
            async with playing(url):
                pass
            process.wait_for(r"ended: bot finished")
        return process, await stop(process)
    finally:
        process.kill()


async def measure(state: str, signum: signal.Signals) -> dict[str, Any]:
    """One stop of `gamecast up` in `state` by `signum`."""

    async def stop(process: Running) -> float | None:
        return await asyncio.to_thread(process.signal_and_wait, signum, GIVE_UP_S)

    process, seconds = await stopped_in(state, stop)
    return {
        "state": state,
        "signal": signum.name,
        "seconds": seconds,  # None: still running GIVE_UP_S later, killed
        "status": "killed (hung)" if seconds is None else process.process.returncode,
        "stopped": "gamecast: stopped" in process.output,
    }


def main(args: argparse.Namespace) -> None:
    print(f"gamecast bench stop: `gamecast up` stopped by SIGINT and SIGTERM in each state, "
          f"{args.repeat} run(s) each (target: exit within {TARGET_S:.0f} s)")  # fmt: skip
    rows = [
        asyncio.run(measure(state, signum))
        for state in STATES
        for signum in (signal.SIGINT, signal.SIGTERM)
        for _ in range(args.repeat)
    ]
    print(table(rows, COLUMNS))
    slowest: dict[str, float] = {}  # of the repeats: what the target is held to
    for row in rows:
        key = f"{row['state']}, {row['signal']} (s)"
        seconds = GIVE_UP_S if row["seconds"] is None else row["seconds"]
        slowest[key] = max(slowest.get(key, 0.0), seconds)
    limits = {key: limit(value, TARGET_S, at_most=True) for key, value in slowest.items()}
    print_limits(13, limits, "{:.2f}")
    report = {"benchmark": "stop", "machine": machine(), "results": rows, "targets": limits}
    print_end(report, args.out)
