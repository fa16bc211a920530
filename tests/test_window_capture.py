"""A build's window under Xvfb: captured to I420, driven through XTEST, marked in the track.

The pure parts (key and gamepad mapping, the input log, the frame source's repeat policy) run
without X; the rest starts Xvfb and the example game (examples/arcade) for real.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from contracts.input_events import GamepadState, InputEvent, KeyEvent, PointerButton, PointerMove
from contracts.marker import FrameMarker, read_marker
from contracts.planes import i420_planes
from streamer.encoder import X264
from streamer.game_process import GameProcess
from streamer.track import GameVideoTrack
from streamer.window_capture import CapturedFrame, CaptureError, WindowCapture, WindowFrames
from streamer.x_input import (
    DEFAULT_GAMEPAD_KEYMAP,
    GamepadKeymap,
    HeldKeys,
    InputLog,
    XTestInput,
    keysym_name,
)
from streamer.xdisplay import XvfbDisplay, xvfb_unavailable_reason
from tests.conftest import eventually
from tests.samples import H264Receiver

ARCADE = Path(__file__).resolve().parent.parent / "examples" / "arcade"
WIDTH, HEIGHT = 1280, 720
# BT.601 luma of the example game's colours, as swscale converts them.
BACKGROUND_Y, PLAYER_Y, WHITE_Y, RED_Y, LAMP_ON_Y, LAMP_OFF_Y = 37, 184, 235, 99, 151, 60
# The player's square starts centred (x 608-671, y 328-391); the row looked at is clear of
# the crosshair the game draws where SDL says the pointer is (Xvfb starts it centred).
PLAYER_ROW = 385

needs_xvfb = pytest.mark.skipif(
    xvfb_unavailable_reason() is not None, reason=f"no Xvfb: {xvfb_unavailable_reason()}"
)


# The pure parts.


def test_browser_key_codes_map_to_us_keysyms() -> None:
    codes = ["KeyW", "KeyZ", "Digit7", "Numpad3", "F12", "ArrowLeft", "Space", "Enter",
             "ShiftLeft", "Quote", "NumpadEnter"]  # fmt: skip
    assert [keysym_name(c) for c in codes] == [
        "w", "z", "7", "KP_3", "F12", "Left", "space", "Return", "Shift_L", "apostrophe",
        "KP_Enter",
    ]  # fmt: skip
    assert [keysym_name(c) for c in ("Keyw", "KeyAB", "F25", "Fn", "Digit", "Lang1")] == [None] * 6


def test_the_default_gamepad_mapping_holds_arrows_and_buttons_as_keys() -> None:
    held = DEFAULT_GAMEPAD_KEYMAP.held
    assert held(GamepadState(1, axes=(-0.9, 0.6), buttons=(1.0, 0.2))) == {
        "ArrowLeft", "ArrowDown", "Space"
    }  # fmt: skip
    assert held(GamepadState(2, axes=(0.4,), buttons=(0.0,) * 12 + (1.0,) + (0.0,) * 3)) == {
        "ArrowUp"
    }
    assert held(GamepadState(3, axes=(), buttons=())) == frozenset()
    with pytest.raises(ValueError) as error:
        GamepadKeymap(buttons={0: "Space", 1: "Fn", 2: "Lang1"})
    assert str(error.value) == "gamepad keymap names keys with no X keysym: ['Fn', 'Lang1']"


def test_a_key_held_by_keyboard_and_pad_goes_up_when_both_let_go() -> None:
    keys = HeldKeys()
    assert keys.key("ArrowLeft", True) == [("ArrowLeft", True)]
    assert keys.gamepad(frozenset({"ArrowLeft", "Space"})) == [("Space", True)]
    assert keys.key("ArrowLeft", False) == []  # the stick still holds it
    assert keys.key("KeyA", False) == []  # never down: nothing to release
    assert keys.gamepad(frozenset({"Space"})) == [("ArrowLeft", False)]
    assert keys.key("KeyD", True) == [("KeyD", True)]
    assert keys.key("KeyD", True) == []  # a browser's key repeat is no new press
    assert keys.release_all() == [("KeyD", False), ("Space", False)]
    assert keys.release_all() == []


def test_the_input_log_answers_which_input_came_before_a_grab() -> None:
    log = InputLog(entries=3)
    assert log.sequence_before(1_000) == 0
    for seq, at_us in ((1, 100), (2, 200), (4, 300), (3, 350), (5, 400)):
        log.record(seq, at_us)
    assert [log.sequence_before(t) for t in (99, 150, 200, 349, 399, 10_000)] == [
        1, 1, 2, 4, 4, 5
    ]  # fmt: skip
    log.record(6, 500)  # (200, 2) falls off: before what is kept, the newest forgotten seq
    assert [log.sequence_before(t) for t in (150, 250, 300, 500)] == [2, 2, 4, 6]


class _ScriptedCapture:
    """Stands in for WindowCapture: hands out the frames it was given, then none."""

    display_name, width, height, fps = ":7", 256, 144, 60

    def __init__(self, frames: list[CapturedFrame]) -> None:
        self.frames = frames

    def take(self, timeout: float) -> CapturedFrame | None:
        return self.frames.pop(0) if self.frames else None


class _KeptInput:
    def __init__(self) -> None:
        self.events: list[InputEvent] = []

    def push(self, event: InputEvent) -> None:
        self.events.append(event)


def _captured(level: int, at_ms: int, input_sequence: int) -> CapturedFrame:
    picture = np.full((144 * 3 // 2, 256), level, dtype=np.uint8)
    return CapturedFrame(picture, at_ms * 1000 - 700, at_ms, input_sequence, 2.5)


def test_window_frames_mark_each_capture_and_repeat_the_last_on_a_copy() -> None:
    first = _captured(90, 1_700_000_000_123, 4)
    kept = _KeptInput()
    frames = WindowFrames(_ScriptedCapture([first]), kept, mark=True)  # type: ignore[arg-type]
    sent = [frames.produce(sequence) for sequence in (10, 11)]
    markers = [read_marker(i420_planes(f.to_ndarray())[0]) for f in sent]
    assert markers == [
        FrameMarker.at(10, 1_700_000_000_123, 4),
        FrameMarker.at(11, 1_700_000_000_123, 4),
    ]
    assert frames.repeats == 1
    assert sent[0].planes[0].buffer_ptr == first.picture.ctypes.data  # wrapped, not copied
    assert sent[1].planes[0].buffer_ptr != first.picture.ctypes.data  # repainted on a copy
    assert read_marker(i420_planes(first.picture)[0]).frame_sequence == 10  # left as sent
    frames.push_input(KeyEvent(1, "KeyW", True))
    assert kept.events == [KeyEvent(1, "KeyW", True)]


def test_unmarked_window_frames_are_the_captured_pictures_untouched() -> None:
    first = _captured(90, 1_000, 0)
    frames = WindowFrames(_ScriptedCapture([first]), _KeptInput(), mark=False)  # type: ignore[arg-type]
    sent = [frames.produce(sequence) for sequence in (0, 1)]
    assert all(f.planes[0].buffer_ptr == first.picture.ctypes.data for f in sent)
    assert int(first.picture.min()) == int(first.picture.max()) == 90


def test_a_stream_with_no_capture_at_all_stops_with_a_reason() -> None:
    frames = WindowFrames(_ScriptedCapture([]), _KeptInput(), mark=True)  # type: ignore[arg-type]
    with pytest.raises(CaptureError) as error:
        frames.produce(0)
    assert str(error.value) == "no frame captured from :7 within 5 s"


def test_a_track_refuses_frames_of_another_size_or_the_gpu_flag() -> None:
    frames = WindowFrames(_ScriptedCapture([]), _KeptInput(), mark=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError) as error:
        GameVideoTrack(1280, 720, 60, frames=frames)
    assert str(error.value) == "the track is 1280x720 but its frames are 256x144"
    with pytest.raises(ValueError) as error:
        GameVideoTrack(256, 144, 60, gpu=True, frames=frames)
    assert str(error.value) == "gpu=True draws the reference game; it cannot apply to `frames`"


async def test_a_display_that_does_not_exist_fails_the_capture_with_ffmpegs_reason() -> None:
    async with WindowCapture(":9999", 320, 240, 60) as capture:
        with pytest.raises(CaptureError) as error:
            await asyncio.to_thread(capture.take, 10)
    assert str(error.value) == "capturing :9999 failed: [Errno 5] Input/output error: ':9999'"


# The example game, really running.


@dataclass
class Arcade:
    display: XvfbDisplay
    game: GameProcess
    x_input: XTestInput
    capture: WindowCapture


@pytest.fixture
async def arcade() -> AsyncIterator[Arcade]:
    """Xvfb, the example game on it, XTEST input and a 60 fps capture, all started."""
    async with XvfbDisplay(WIDTH, HEIGHT) as display:
        argv = [sys.executable, "game.py"]
        x_input = XTestInput(display.name, WIDTH, HEIGHT)
        async with (
            GameProcess(argv, cwd=ARCADE, display=display.name) as game,
            x_input,
            WindowCapture(display.name, WIDTH, HEIGHT, 60, x_input.log.sequence_before) as capture,
        ):
            await captured_where(capture, lambda p: luma(p, 100, 100) == BACKGROUND_Y)
            yield Arcade(display, game, x_input, capture)


def luma(picture: np.ndarray, x: int, y: int) -> int:
    return int(i420_planes(picture)[0][y, x])


def player_span(picture: np.ndarray) -> tuple[int, int]:
    """The first and last column of the player's square on its row."""
    columns = np.flatnonzero(i420_planes(picture)[0][PLAYER_ROW] == PLAYER_Y)
    return int(columns[0]), int(columns[-1])


async def captured_where(
    capture: WindowCapture,
    holds: Callable[[np.ndarray], bool],
    seconds: float = 20,
    after_us: int = 0,
) -> CapturedFrame:
    """The first frame grabbed after `after_us` (Unix microseconds) whose picture satisfies
    `holds`; the game runs on its own, so the picture is polled."""
    async with asyncio.timeout(seconds):
        while True:
            frame = await asyncio.to_thread(capture.take, 1.0)
            if frame is not None and frame.grabbed_at_us > after_us and holds(frame.picture):
                return frame


@needs_xvfb
async def test_the_window_is_captured_as_i420_of_the_display_size(arcade: Arcade) -> None:
    frame = await captured_where(arcade.capture, lambda _: True)
    assert frame.picture.shape == (HEIGHT * 3 // 2, WIDTH) and frame.picture.dtype == np.uint8
    assert frame.picture.flags.c_contiguous
    assert player_span(frame.picture) == (608, 671)  # centred, nothing pressed
    assert luma(frame.picture, WIDTH - 30, HEIGHT - 12) in (WHITE_Y, LAMP_OFF_Y)  # the sweep
    assert frame.input_sequence == 0 and frame.latency_ms > 0
    assert frame.returned_at_ms >= frame.grabbed_at_us // 1000
    assert arcade.capture.frames_captured >= 1


@needs_xvfb
async def test_a_key_press_moves_the_player_and_reaches_the_markers(arcade: Arcade) -> None:
    track = GameVideoTrack(
        WIDTH, HEIGHT, 60, frames=WindowFrames(arcade.capture, arcade.x_input, mark=True)
    )
    track.start(None)  # raw frames, as aiortc's own encoders take them
    seen: list[tuple[FrameMarker, tuple[int, int]]] = []

    async def receive_until(holds: Callable[[FrameMarker, tuple[int, int]], bool]) -> None:
        async with asyncio.timeout(20):
            while True:
                picture = (await track.recv()).to_ndarray()
                seen.append((read_marker(i420_planes(picture)[0]), player_span(picture)))
                if holds(*seen[-1]):
                    return

    try:
        await receive_until(lambda _, __: len(seen) == 10)
        track.push_input(KeyEvent(5, "ArrowRight", True))
        await receive_until(lambda _, span: span[0] >= 608 + 60)
        track.push_input(KeyEvent(6, "ArrowRight", False))
        await receive_until(lambda marker, _: marker.input_sequence == 6)
    finally:
        track.stop()
    sequences = [marker.frame_sequence for marker, _ in seen]
    assert sequences == sorted(set(sequences)) and sequences[0] == 0
    inputs = [marker.input_sequence for marker, _ in seen]
    assert inputs[:10] == [0] * 10 and inputs == sorted(inputs)
    assert set(inputs) == {0, 5, 6}
    # The picture changes only in frames whose marker says the press came first.
    moved = [marker.input_sequence for marker, span in seen if span != (608, 671)]
    assert moved and min(moved) == 5
    assert all((span[0] - 608) % 6 == 0 and span[1] - span[0] == 63 for _, span in seen)


@needs_xvfb
async def test_captured_frames_go_through_gamecasts_h264_encoder(arcade: Arcade) -> None:
    track = GameVideoTrack(
        WIDTH, HEIGHT, 60, frames=WindowFrames(arcade.capture, arcade.x_input, mark=True)
    )
    assert track.start(X264).encoding
    try:
        encoded = [await track.recv() for _ in range(12)]
    finally:
        track.stop()
    receiver = H264Receiver()
    pictures = [p.to_ndarray() for f in encoded for p in receiver.decode(f)] + [
        p.to_ndarray() for p in receiver.flush()
    ]
    sequences = [read_marker(i420_planes(p)[0]).frame_sequence for p in pictures]
    assert len(sequences) == 12 and sequences == sorted(set(sequences))
    assert abs(luma(pictures[-1], 100, 100) - BACKGROUND_Y) <= 2  # lossy, but the game's


@needs_xvfb
async def test_the_mouse_and_the_gamepad_reach_the_game(arcade: Arcade) -> None:
    def red_box_at(x: int) -> Callable[[np.ndarray], bool]:
        return lambda picture: luma(picture, x - 8, 352) == RED_Y

    push = arcade.x_input.push
    push(PointerMove(1, x=0.25, y=0.5))  # pixel (320, 360)
    push(PointerButton(2, button=0, down=True))
    frame = await captured_where(arcade.capture, red_box_at(320))
    _, u, v = i420_planes(frame.picture)
    assert (int(u[176, 156]), int(v[176, 156])) == (100, 211)  # red, not just as dark
    assert frame.input_sequence >= 2
    push(PointerMove(3, dx=100, dy=0))
    frame = await captured_where(arcade.capture, red_box_at(420))
    assert frame.input_sequence >= 3
    push(GamepadState(4, axes=(0.0, 0.0), buttons=(1.0,)))  # A: Space by default
    frame = await captured_where(
        arcade.capture, lambda p: luma(p, 640, PLAYER_ROW) == WHITE_Y and luma(p, 32, 696) == 151
    )
    assert frame.input_sequence == 4
    push(GamepadState(5, axes=(0.0, 0.0), buttons=(0.0,)))
    await captured_where(
        arcade.capture, lambda p: luma(p, 640, PLAYER_ROW) == PLAYER_Y and luma(p, 32, 696) == 60
    )
    assert arcade.x_input.unmapped == set()
    push(KeyEvent(6, "Lang1", True))  # valid, and no key of a US keyboard
    await eventually(lambda: arcade.x_input.log.sequence_before(time.time_ns() // 1000) == 6)
    assert arcade.x_input.unmapped == {"Lang1"}


@needs_xvfb
async def test_leaving_the_input_releases_what_it_held(arcade: Arcade) -> None:
    async with XTestInput(arcade.display.name, WIDTH, HEIGHT) as x_input:
        x_input.push(KeyEvent(1, "ArrowRight", True))
        x_input.push(PointerButton(2, button=0, down=True))
        await captured_where(arcade.capture, lambda p: player_span(p)[0] > 608 + 12)
    released_us = time.time_ns() // 1000
    # A grab well after the release (the game handles events every frame), then a later one.
    after = await captured_where(arcade.capture, lambda _: True, after_us=released_us + 100_000)
    later = await captured_where(
        arcade.capture, lambda _: True, after_us=after.grabbed_at_us + 200_000
    )
    assert player_span(later.picture) == player_span(after.picture)  # the square stopped
    assert luma(later.picture, 632, 352) != RED_Y  # the button is up: the box is not filled
