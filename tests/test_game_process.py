"""streamer/game_process.py: real processes crash, quit and are stopped; none is left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from contracts.input_events import KeyEvent
from streamer.game_process import (
    GameExit,
    GameProcess,
    GameProcessError,
    OutputTail,
    live_members,
)
from streamer.x_input import XTestInput
from streamer.xdisplay import XvfbDisplay, xvfb_unavailable_reason
from tests.conftest import eventually

ARCADE = Path(__file__).resolve().parent.parent / "examples" / "arcade"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


class Crashes:
    """An `on_crash` callback that keeps what it was given."""

    def __init__(self) -> None:
        self.seen: list[GameExit] = []

    async def __call__(self, ended: GameExit) -> None:
        self.seen.append(ended)


def test_the_tail_keeps_the_last_lines_across_chunks() -> None:
    tail = OutputTail(lines=3)
    for chunk in (b"one\ntw", b"o\r\nthree\nfour\nfi", b"ve"):
        tail.feed(chunk)
    assert tail.lines() == ("three", "four", "five")
    tail.feed(b"\n" + b"x" * 5000 + b"\n\xff\n")
    assert tail.lines() == ("five", "x" * 400, "\ufffd")


async def test_a_crash_is_reported_with_its_exit_code_and_stderr_tail(tmp_path: Path) -> None:
    crashes = Crashes()
    code = (
        "import sys; print('loading'); "
        "print('warn: low memory\\nfatal: boom', file=sys.stderr); sys.exit(3)"
    )
    game = GameProcess(python(code), cwd=tmp_path, display=":99", on_crash=crashes)
    await game.start()
    ended = await game.wait()
    assert ended == GameExit(3, ("warn: low memory", "fatal: boom"), requested=False)
    assert crashes.seen == [ended]
    assert ended.crashed and ended.signal is None
    assert ended.describe() == "the game crashed: it exited with code 3: fatal: boom"
    assert game.stdout.lines() == ("loading",)
    assert await game.stop() == ended  # stopping a finished game changes nothing


async def test_a_signal_is_reported_by_name(tmp_path: Path) -> None:
    crashes = Crashes()
    code = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    async with GameProcess(python(code), cwd=tmp_path, display=":99", on_crash=crashes) as game:
        ended = await game.wait()
    assert (ended.returncode, ended.signal, ended.crashed) == (-11, 11, True)
    assert ended.describe() == "the game crashed: it was killed by SIGSEGV"
    assert crashes.seen == [ended]


async def test_a_clean_quit_is_no_crash(tmp_path: Path) -> None:
    crashes = Crashes()
    async with GameProcess(python("pass"), cwd=tmp_path, display=":99", on_crash=crashes) as game:
        ended = await game.wait()
    assert ended == GameExit(0, (), requested=False) and not ended.crashed
    assert ended.describe() == "the game quit: it exited with code 0"
    assert crashes.seen == [ended]  # the session ends either way


async def test_the_game_runs_on_our_display_with_sdl_on_x11(tmp_path: Path) -> None:
    code = "import os; print(os.environ['DISPLAY'], os.environ['SDL_VIDEODRIVER'], os.getcwd())"
    async with GameProcess(python(code), cwd=tmp_path, display=":42", env={}) as game:
        await game.wait()
    assert game.stdout.lines() == (f":42 x11 {tmp_path}",)


STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
helper = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
print(helper.pid, flush=True)
time.sleep(60)
"""


async def test_stop_kills_the_whole_group_even_when_it_ignores_sigterm(tmp_path: Path) -> None:
    crashes = Crashes()
    game = GameProcess(
        python(STUBBORN), cwd=tmp_path, display=":99", on_crash=crashes, stop_grace=0.3
    )
    await game.start()
    assert game.pid is not None
    await eventually(lambda: bool(game.stdout.lines()))
    helper = int(game.stdout.lines()[0])
    assert sorted(live_members(game.pid)) == sorted([game.pid, helper])
    ended = await game.stop()
    assert ended == GameExit(-9, (), requested=True)
    assert ended.describe() == "the game was stopped (was killed by SIGKILL)"
    assert live_members(game.pid) == [] and not game.running
    assert crashes.seen == []  # a stop is no crash


async def test_a_crash_is_reported_at_once_though_a_helper_holds_its_output(
    tmp_path: Path,
) -> None:
    code = (
        "import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)']); sys.exit('fatal: lost the asset server')"
    )
    async with GameProcess(python(code), cwd=tmp_path, display=":99", stop_grace=5) as game:
        async with asyncio.timeout(10):  # the helper would hold stdout for 60 s
            ended = await game.wait()
        assert ended.describe() == (
            "the game crashed: it exited with code 1: fatal: lost the asset server"
        )
        assert game.pid is not None and live_members(game.pid) == []


async def test_a_helper_that_left_the_group_delays_nothing(tmp_path: Path) -> None:
    """It holds stdout, and only it can be stopped by whoever started it: beyond its group
    the container cannot tell it from any other process (a cgroup would)."""
    code = (
        "import subprocess, sys; helper = subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)'], start_new_session=True); print(helper.pid); sys.exit(2)"
    )
    async with GameProcess(python(code), cwd=tmp_path, display=":99") as game:
        async with asyncio.timeout(10):
            ended = await game.wait()
    helper = int(game.stdout.lines()[0])
    try:
        assert ended == GameExit(2, (), requested=False)
        assert live_members(helper) == [helper]
    finally:
        os.kill(helper, signal.SIGKILL)


async def test_an_entry_that_cannot_start_says_why(tmp_path: Path) -> None:
    game = GameProcess(["/nonexistent/game"], cwd=tmp_path, display=":99")
    with pytest.raises(GameProcessError) as error:
        await game.start()
    assert str(error.value) == (
        f"cannot start '/nonexistent/game' in {tmp_path}: "
        "[Errno 2] No such file or directory: '/nonexistent/game'"
    )
    assert await game.stop() is None
    with pytest.raises(GameProcessError) as error:
        await game.wait()
    assert str(error.value) == "the game process was never started"


@pytest.mark.skipif(xvfb_unavailable_reason() is not None, reason="no Xvfb")
async def test_the_example_game_crashing_on_a_key_is_reported() -> None:
    crashes = Crashes()
    async with XvfbDisplay(1280, 720) as display:
        argv = [sys.executable, "game.py", "--crash-on", "k"]
        async with GameProcess(argv, cwd=ARCADE, display=display.name, on_crash=crashes) as game:
            await eventually(lambda: bool(game.stdout.lines()), seconds=20)  # its window is up
            async with XTestInput(display.name, 1280, 720) as keyboard:
                keyboard.push(KeyEvent(1, "KeyK", True))
                async with asyncio.timeout(20):
                    ended = await game.wait()
    assert game.stdout.lines() == ("arcade: 1280x720 at 60 fps",)
    assert (ended.returncode, ended.requested, crashes.seen) == (1, False, [ended])
    assert ended.stderr_tail[0] == "Traceback (most recent call last):"
    assert ended.describe() == (
        "the game crashed: it exited with code 1: RuntimeError: crash requested: "
        "the 'k' key was pressed (--crash-on)"
    )


def test_a_flood_of_empty_lines_keeps_only_the_tail_and_the_last_words() -> None:
    tail = OutputTail(lines=3)
    tail.feed(b"\n" * 200_000 + b"one\ntwo\nthree\n")
    assert tail.lines() == ("one", "two", "three")
