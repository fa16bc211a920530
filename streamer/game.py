"""The reference game: a deterministic, input-driven picture rendered with vectorised numpy.

It exists so that every stream has content whose every pixel is known: given the seed and the
sequence of input events applied before each frame, frame N is always the same picture. That
lets a verifier predict what it should see and a test check that input reached the game.

Controls: WASD/arrows or the left gamepad stick move the player square; Space or gamepad
button A flashes it; the pointer (absolute or pointer-locked) moves the crosshair, and mouse
buttons fill it (main: red, secondary: green, auxiliary: blue); gamepad buttons light a row of
lamps along the bottom edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamer.input_events import GamepadState, InputEvent, KeyEvent, PointerButton, PointerMove

RGBFrame = npt.NDArray[np.uint8]

PLAYER_SIZE = 64
PLAYER_SPEED = 6.0  # pixels per frame at full deflection
CURSOR_SIZE = 24
OBSTACLES = 10
LAMP_COUNT = 16
SCROLL_PER_FRAME = 2
_MOVE_KEYS = {
    "KeyW": (0, -1), "ArrowUp": (0, -1), "KeyS": (0, 1), "ArrowDown": (0, 1),
    "KeyA": (-1, 0), "ArrowLeft": (-1, 0), "KeyD": (1, 0), "ArrowRight": (1, 0),
}  # fmt: skip
_BUTTON_COLOURS = {0: (230, 40, 40), 2: (40, 200, 60), 1: (40, 90, 230)}
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
        self._frame: RGBFrame = np.empty((height, width, 3), dtype=np.uint8)

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
        """Draw the current state; returns the game's own buffer, valid until the next render."""
        frame = self._frame
        offset = (self.frame_index * SCROLL_PER_FRAME) % self.width
        frame[:, : self.width - offset] = self._background[:, offset : self.width]
        frame[:, self.width - offset :] = self._background[:, :offset]
        for (x, y), (w, h), colour in zip(
            self._obstacle_pos.astype(int), self._obstacle_size, self._obstacle_colour, strict=True
        ):
            frame[y : y + h, x : x + w] = colour
        px, py = self._player.astype(int)
        colour = (255, 255, 255) if self._flash else (250, 200, 30)
        frame[py : py + PLAYER_SIZE, px : px + PLAYER_SIZE] = colour
        frame[py + 8 : py + PLAYER_SIZE - 8, px + 8 : px + PLAYER_SIZE - 8] = (30, 30, 30)
        self._draw_cursor(frame)
        self._draw_lamps(frame)
        return frame

    def _draw_cursor(self, frame: RGBFrame) -> None:
        cx = int(self.controls.cursor[0] * (self.width - 1))
        cy = int(self.controls.cursor[1] * (self.height - 1))
        half = CURSOR_SIZE // 2
        x0, x1 = max(0, cx - half), min(self.width, cx + half)
        y0, y1 = max(0, cy - half), min(self.height, cy + half)
        held = [b for b in sorted(self.controls.buttons) if b in _BUTTON_COLOURS]
        if held:
            frame[y0:y1, x0:x1] = _BUTTON_COLOURS[held[0]]
        frame[max(0, cy - 1) : cy + 2, x0:x1] = 255
        frame[y0:y1, max(0, cx - 1) : cx + 2] = 255

    def _draw_lamps(self, frame: RGBFrame) -> None:
        lamp = self.width // (LAMP_COUNT * 2)
        top = self.height - lamp - 8
        for index in range(LAMP_COUNT):
            pressed = _pressed(self.controls.pad_buttons, index)
            x = lamp // 2 + index * 2 * lamp
            frame[top : top + lamp, x : x + lamp] = (40, 230, 90) if pressed else (50, 50, 60)


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
