"""The reference game: a deterministic, input-driven picture rendered with vectorised numpy.

It exists so that every stream has content whose every pixel is known: given the seed and the
sequence of input events applied before each frame, frame N is always the same picture. That
lets a verifier predict what it should see and a test check that input reached the game.

Controls: WASD/arrows or the left gamepad stick move the player square; Space or gamepad
button A flashes it; the pointer (absolute or pointer-locked) moves the crosshair, and mouse
buttons fill it (main: red, secondary: green, auxiliary: blue); gamepad buttons light a row of
lamps along the bottom edge.

The RGB picture can also be drawn with CuPy, in GPU memory (`render_with`): the state stays
on the host and the drawing is only copies and flat fills, so the two pictures are the same
bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from contracts.input_events import GamepadState, InputEvent, KeyEvent, PointerButton, PointerMove
from contracts.planes import I420Frame, i420_planes
from reference_game.colour import RGB, YUV, rgb_to_i420, rgb_to_yuv

RGBFrame = npt.NDArray[np.uint8]

PLAYER_SIZE = 64
PLAYER_SPEED = 6.0  # pixels per frame at full deflection
CURSOR_SIZE = 24
OBSTACLES = 10
LAMP_COUNT = 16
SCROLL_PER_FRAME = 2  # even: I420's half-width chroma planes then scroll by whole samples
_MOVE_KEYS = {
    "KeyW": (0, -1), "ArrowUp": (0, -1), "KeyS": (0, 1), "ArrowDown": (0, 1),
    "KeyA": (-1, 0), "ArrowLeft": (-1, 0), "KeyD": (1, 0), "ArrowRight": (1, 0),
}  # fmt: skip
_BUTTON_COLOURS: dict[int, RGB] = {0: (230, 40, 40), 2: (40, 200, 60), 1: (40, 90, 230)}
WHITE: RGB = (255, 255, 255)
_STICK_DEAD_ZONE = 0.15


@dataclass
class PlayerControls:
    """What the player is holding right now; events update it, frames read it."""

    keys: set[str] = field(default_factory=set)
    buttons: set[int] = field(default_factory=set)
    cursor: tuple[float, float] = (0.5, 0.5)  # fraction of the picture
    axes: tuple[float, ...] = ()
    pad_buttons: tuple[float, ...] = ()
    last_seq: int = 0


class ReferenceGame:
    """Game state plus a renderer into a preallocated H x W x 3 RGB buffer.

    `apply` records input, `advance` moves the world by one frame, `render` draws it. All three
    are pure functions of the seed and the calls made, never of the clock.
    """

    def __init__(self, width: int = 1280, height: int = 720, seed: int = 0) -> None:
        if width < 256 or height < 144:
            raise ValueError(f"the reference game needs at least 256x144, got {width}x{height}")
        self.width = width
        self.height = height
        self.controls = PlayerControls()
        self.frame_index = 0
        rng = np.random.default_rng(seed)
        self._background = _make_background(width, height, rng)
        self._player = np.array([width / 2 - PLAYER_SIZE / 2, height / 2 - PLAYER_SIZE / 2])
        self._obstacle_pos = rng.uniform([0, 0], [width - 80, height - 80], size=(OBSTACLES, 2))
        self._obstacle_vel = rng.uniform(-4, 4, size=(OBSTACLES, 2))
        self._obstacle_size = rng.integers(24, 80, size=(OBSTACLES, 2))
        self._obstacle_colour = rng.integers(60, 256, size=(OBSTACLES, 3)).astype(np.uint8)
        self._flash = 0
        self._rgb: dict[str, _RgbCanvas] = {}  # by array module: numpy, cupy
        self._i420: _I420Canvas | None = None

    @property
    def input_sequence(self) -> int:
        """The highest input `seq` applied so far (0 when none): what the marker reports."""
        return self.controls.last_seq

    def apply(self, event: InputEvent) -> None:
        controls = self.controls
        controls.last_seq = max(controls.last_seq, event.seq)
        if isinstance(event, KeyEvent):
            if event.down:
                controls.keys.add(event.code)
                if event.code == "Space":
                    self._flash = 12
            else:
                controls.keys.discard(event.code)
        elif isinstance(event, PointerButton):
            (controls.buttons.add if event.down else controls.buttons.discard)(event.button)
        elif isinstance(event, PointerMove):
            if event.x is not None and event.y is not None:
                controls.cursor = (event.x, event.y)
            else:
                x, y = controls.cursor
                controls.cursor = (
                    min(1.0, max(0.0, x + event.dx / self.width)),
                    min(1.0, max(0.0, y + event.dy / self.height)),
                )
        elif isinstance(event, GamepadState):
            was_pressed = _pressed(controls.pad_buttons, 0)
            controls.axes = event.axes
            controls.pad_buttons = event.buttons
            if _pressed(event.buttons, 0) and not was_pressed:
                self._flash = 12

    def advance(self) -> None:
        """Move the world by one frame."""
        self.frame_index += 1
        dx: float = sum(_MOVE_KEYS[k][0] for k in self.controls.keys if k in _MOVE_KEYS)
        dy: float = sum(_MOVE_KEYS[k][1] for k in self.controls.keys if k in _MOVE_KEYS)
        axes = self.controls.axes
        if len(axes) >= 2:
            dx += axes[0] if abs(axes[0]) > _STICK_DEAD_ZONE else 0.0
            dy += axes[1] if abs(axes[1]) > _STICK_DEAD_ZONE else 0.0
        limits = np.array([self.width - PLAYER_SIZE, self.height - PLAYER_SIZE])
        self._player = np.clip(self._player + PLAYER_SPEED * np.array([dx, dy]), 0, limits)
        self._obstacle_pos += self._obstacle_vel
        bound = np.array([self.width, self.height]) - self._obstacle_size
        bounced = (self._obstacle_pos < 0) | (self._obstacle_pos > bound)
        self._obstacle_vel[bounced] *= -1
        self._obstacle_pos = np.clip(self._obstacle_pos, 0, bound)
        self._flash = max(0, self._flash - 1)

    def render(self) -> RGBFrame:
        """Draw the current state in RGB; returns the game's own buffer, valid until the next.

        This is the picture as the game means it: what verifiers and tests compare against.
        """
        frame: RGBFrame = self.render_with(np)
        return frame

    def render_with(self, xp: ModuleType) -> Any:
        """`render`, drawn with the array module `xp`: numpy, or cupy to keep it in GPU memory.

        The same picture whatever `xp` is. Returns the game's own `xp` array, valid until the
        next call with that module.
        """
        canvas = self._rgb.get(xp.__name__)
        if canvas is None:
            canvas = self._rgb[xp.__name__] = _RgbCanvas(self._background, xp)
        self._draw(canvas)
        return canvas.frame

    def render_i420(self) -> I420Frame:
        """Draw the current state straight into I420, the encoder's input, with no conversion.

        Same geometry as `render`; colours differ only by BT.601 rounding and chroma sharing
        one sample per 2 x 2 block. Returns the game's own buffer, valid until the next call.
        """
        if self._i420 is None:
            self._i420 = _I420Canvas(self._background)
        self._draw(self._i420)
        return self._i420.frame

    def _draw(self, canvas: _Canvas) -> None:
        canvas.scroll((self.frame_index * SCROLL_PER_FRAME) % self.width)
        for (x, y), (w, h), colour in zip(
            self._obstacle_pos.astype(int), self._obstacle_size, self._obstacle_colour, strict=True
        ):
            canvas.fill(y, y + h, x, x + w, (int(colour[0]), int(colour[1]), int(colour[2])))
        px, py = self._player.astype(int)
        colour = WHITE if self._flash else (250, 200, 30)
        canvas.fill(py, py + PLAYER_SIZE, px, px + PLAYER_SIZE, colour)
        canvas.fill(py + 8, py + PLAYER_SIZE - 8, px + 8, px + PLAYER_SIZE - 8, (30, 30, 30))
        self._draw_cursor(canvas)
        self._draw_lamps(canvas)

    def _draw_cursor(self, canvas: _Canvas) -> None:
        cx = int(self.controls.cursor[0] * (self.width - 1))
        cy = int(self.controls.cursor[1] * (self.height - 1))
        half = CURSOR_SIZE // 2
        x0, x1 = max(0, cx - half), min(self.width, cx + half)
        y0, y1 = max(0, cy - half), min(self.height, cy + half)
        held = [b for b in sorted(self.controls.buttons) if b in _BUTTON_COLOURS]
        if held:
            canvas.fill(y0, y1, x0, x1, _BUTTON_COLOURS[held[0]])
        canvas.fill(max(0, cy - 1), cy + 2, x0, x1, WHITE)
        canvas.fill(y0, y1, max(0, cx - 1), cx + 2, WHITE)

    def _draw_lamps(self, canvas: _Canvas) -> None:
        lamp = self.width // (LAMP_COUNT * 2)
        top = self.height - lamp - 8
        for index in range(LAMP_COUNT):
            pressed = _pressed(self.controls.pad_buttons, index)
            x = lamp // 2 + index * 2 * lamp
            canvas.fill(top, top + lamp, x, x + lamp, (40, 230, 90) if pressed else (50, 50, 60))


class _Canvas(Protocol):
    """Where the game draws: a scrolled background, then flat rectangles on top."""

    def scroll(self, offset: int) -> None: ...

    def fill(self, y0: int, y1: int, x0: int, x1: int, colour: RGB) -> None: ...


class _RgbCanvas:
    """Draws RGB with any array module that indexes like numpy (numpy itself, CuPy)."""

    def __init__(self, background: RGBFrame, xp: ModuleType) -> None:
        self._xp = xp
        self._background = xp.asarray(background)
        self.frame = xp.empty_like(self._background)
        # CuPy fills only from scalars or device arrays: each colour is uploaded once.
        self._colours: dict[RGB, Any] = {}

    def scroll(self, offset: int) -> None:
        width = self.frame.shape[1]
        self.frame[:, : width - offset] = self._background[:, offset:]
        self.frame[:, width - offset :] = self._background[:, :offset]

    def fill(self, y0: int, y1: int, x0: int, x1: int, colour: RGB) -> None:
        value = self._colours.get(colour)
        if value is None:
            value = self._colours[colour] = self._xp.asarray(colour, dtype=self._xp.uint8)
        self.frame[y0:y1, x0:x1] = value


class _I420Canvas:
    """Draws into I420; a rectangle's chroma covers every 2 x 2 block it touches."""

    def __init__(self, background: RGBFrame) -> None:
        self._background = rgb_to_i420(background)
        self._background_planes = i420_planes(self._background)
        self.frame: I420Frame = np.empty_like(self._background)
        self._planes = i420_planes(self.frame)
        self._colours: dict[RGB, YUV] = {}

    def scroll(self, offset: int) -> None:
        for plane, source, shift in zip(
            self._planes, self._background_planes, (offset, offset // 2, offset // 2), strict=True
        ):
            width = plane.shape[1]
            plane[:, : width - shift] = source[:, shift:]
            plane[:, width - shift :] = source[:, :shift]

    def fill(self, y0: int, y1: int, x0: int, x1: int, colour: RGB) -> None:
        yuv = self._colours.get(colour)
        if yuv is None:
            yuv = self._colours[colour] = rgb_to_yuv(colour)
        luma, u, v = self._planes
        luma[y0:y1, x0:x1] = yuv[0]
        cy0, cy1, cx0, cx1 = y0 // 2, (y1 + 1) // 2, x0 // 2, (x1 + 1) // 2
        u[cy0:cy1, cx0:cx1] = yuv[1]
        v[cy0:cy1, cx0:cx1] = yuv[2]


def _pressed(buttons: tuple[float, ...], index: int) -> bool:
    return index < len(buttons) and buttons[index] > 0.5


def _make_background(width: int, height: int, rng: np.random.Generator) -> RGBFrame:
    """A seeded gradient with a grid: cheap to scroll, and busy enough to exercise the encoder."""
    base = rng.integers(20, 90, size=3)
    ys = np.linspace(0.0, 1.0, height)[:, None, None]
    xs = np.linspace(0.0, 1.0, width)[None, :, None]
    picture = (
        base
        + 60 * ys * np.array([0.2, 0.5, 1.0])
        + 40 * np.sin(xs * np.pi * 4) * np.array([1.0, 0.3, 0.1])
    )
    picture = np.clip(picture, 0, 255).astype(np.uint8)
    picture[::48] = 140
    picture[:, ::48] = 140
    return np.ascontiguousarray(np.broadcast_to(picture, (height, width, 3)))
