"""streamer/xdisplay.py: a real Xvfb per test, reachable while owned, gone once left."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from Xlib import display as xlib_display

from streamer.xdisplay import XDisplayError, XvfbDisplay, xvfb_unavailable_reason

needs_xvfb = pytest.mark.skipif(
    xvfb_unavailable_reason() is not None, reason=f"no Xvfb: {xvfb_unavailable_reason()}"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_xvfb
async def test_a_client_connects_to_a_screen_of_the_asked_size_until_it_is_left() -> None:
    async with XvfbDisplay(640, 360) as display:
        pid = display.pid
        assert pid is not None and display.name.startswith(":")
        client = xlib_display.Display(display.name)
        try:
            screen = client.screen()
            size = (screen.width_in_pixels, screen.height_in_pixels, screen.root_depth)
            extensions = set(client.list_extensions())
        finally:
            client.close()
        assert size == (640, 360, 24)
        assert {"XTEST", "MIT-SHM"} <= extensions  # input injection, shared-memory grabs
    assert not _alive(pid)  # stopped and reaped: not even a zombie is left
    with pytest.raises(XDisplayError) as error:
        _ = display.name
    assert str(error.value) == "the display is not started (use `async with XvfbDisplay(...)`)"


@needs_xvfb
async def test_two_displays_at_once_get_different_numbers() -> None:
    async with XvfbDisplay(320, 240) as first, XvfbDisplay(320, 240) as second:
        assert first.name != second.name
        assert first.pid != second.pid


@needs_xvfb
async def test_stopping_twice_is_harmless_and_starting_twice_is_refused() -> None:
    display = XvfbDisplay(320, 240)
    await display.start()
    with pytest.raises(XDisplayError) as error:
        await display.start()
    assert str(error.value) == "the display is already started"
    await display.stop()
    await display.stop()
    assert display.pid is None


async def test_a_missing_xvfb_is_named_with_its_package() -> None:
    with pytest.raises(XDisplayError) as error:
        await XvfbDisplay(320, 240, xvfb=Path("/nonexistent/Xvfb")).start()
    assert str(error.value) == (
        "cannot start a virtual display: /nonexistent/Xvfb is missing "
        "(Debian: apt-get install xvfb)"
    )


async def test_a_server_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "Xvfb"
    fake.write_text("#!/bin/sh\necho 'Fatal server error: no screens found' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(XDisplayError) as error:
        await XvfbDisplay(320, 240, xvfb=fake).start()
    assert str(error.value) == (
        "Xvfb failed to start: it exited before choosing a display; "
        "its log: Fatal server error: no screens found"
    )


async def test_a_server_that_never_answers_is_given_up_on_and_stopped(tmp_path: Path) -> None:
    fake = tmp_path / "Xvfb"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    display = XvfbDisplay(320, 240, xvfb=fake, startup_limit=0.2)
    with pytest.raises(XDisplayError) as error:
        await display.start()
    assert str(error.value) == (
        "Xvfb failed to start: it did not accept connections within 0.2 s; its log: (empty)"
    )
    assert display.pid is None


def test_a_display_needs_a_positive_size() -> None:
    with pytest.raises(ValueError, match=r"^a display needs a positive size, got 0x240$"):
        XvfbDisplay(0, 240)


@pytest.mark.skipif(xvfb_unavailable_reason() is not None, reason="no Xvfb")
async def test_the_x_server_itself_runs_under_an_address_space_limit() -> None:
    """A game's pixmaps live in its X server, outside the game's sandbox: bounded there."""
    async with XvfbDisplay(320, 240) as display:
        assert display.pid is not None
        limits = await asyncio.to_thread(Path(f"/proc/{display.pid}/limits").read_text)
        (line,) = [row for row in limits.splitlines() if row.startswith("Max address space")]
        soft, hard = line.split()[3:5]
        assert int(soft) == int(hard) == display.address_space_bytes
        program = await asyncio.to_thread(Path(f"/proc/{display.pid}/exe").resolve)
        assert program.name == "Xvfb"
