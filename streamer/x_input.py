"""Player input into a game build's X display, through the XTEST extension.

Events arrive validated (contracts/input_events.py) and are injected as the X server's own
input, so the build sees an ordinary keyboard and mouse:
- keys by their browser `KeyboardEvent.code` (UI Events KeyboardEvent code values, W3C), a
  physical key, mapped to the keysym that key has on a US layout and on to this display's
  keycode; a code with no mapping is counted and dropped;
- absolute pointer positions as fractions of the screen, relative moves in pixels (XTEST's
  relative motion), buttons as X buttons (main 1, auxiliary 2, secondary 3, back 8, forward 9);
- the gamepad as keys: this host has no /dev/uinput to create a virtual pad with, so each pad
  state is turned into held keys by `DEFAULT_GAMEPAD_KEYMAP` (Gamepad API standard mapping:
  stick and d-pad to arrows, A Space, B X, X Z, Y C, LB Q, RB E, Back Tab, Start Enter).

A key held by both the keyboard and the pad goes up only when both let go. Injection runs in
an owned thread (python-xlib blocks on its socket); the time each batch of events was
processed by the server is logged with its highest `seq`, which is what a captured frame's
marker reports as its input sequence (shared/MARKER.md: applied before the capture).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from Xlib import XK, X
from Xlib import display as xdisplay
from Xlib.error import DisplayError
from Xlib.ext import xtest

from contracts.input_events import (
    MAX_QUEUED_EVENTS,
    GamepadState,
    InputEvent,
    KeyEvent,
    PointerButton,
)
from streamer.errors import StreamerError

log = logging.getLogger(__name__)

INPUT_LOG_ENTRIES = 256  # injection times kept: seconds of input, far more than a frame's age
UNMAPPED_KEPT = 32  # distinct unmapped codes remembered for diagnostics; a client picks them
X_BUTTONS = {0: 1, 1: 2, 2: 3, 3: 8, 4: 9}  # MouseEvent.button -> X button

_NAMED_KEYSYMS = {
    "ArrowUp": "Up", "ArrowDown": "Down", "ArrowLeft": "Left", "ArrowRight": "Right",
    "Space": "space", "Enter": "Return", "Escape": "Escape", "Tab": "Tab",
    "Backspace": "BackSpace", "Delete": "Delete", "Insert": "Insert", "Home": "Home",
    "End": "End", "PageUp": "Prior", "PageDown": "Next", "CapsLock": "Caps_Lock",
    "ShiftLeft": "Shift_L", "ShiftRight": "Shift_R", "ControlLeft": "Control_L",
    "ControlRight": "Control_R", "AltLeft": "Alt_L", "AltRight": "Alt_R",
    "MetaLeft": "Super_L", "MetaRight": "Super_R", "Minus": "minus", "Equal": "equal",
    "BracketLeft": "bracketleft", "BracketRight": "bracketright", "Backslash": "backslash",
    "Semicolon": "semicolon", "Quote": "apostrophe", "Backquote": "grave", "Comma": "comma",
    "Period": "period", "Slash": "slash", "NumpadEnter": "KP_Enter", "NumpadAdd": "KP_Add",
    "NumpadSubtract": "KP_Subtract", "NumpadMultiply": "KP_Multiply",
    "NumpadDivide": "KP_Divide", "NumpadDecimal": "KP_Decimal",
}  # fmt: skip


class XInputError(StreamerError, RuntimeError):
    """The display cannot take injected input (unreachable, or no XTEST extension)."""


def keysym_name(code: str) -> str | None:
    """The X keysym name for a `KeyboardEvent.code` (US layout), or None if it has none here."""
    if code in _NAMED_KEYSYMS:
        return _NAMED_KEYSYMS[code]
    prefix, rest = code[:-1], code[-1:]
    if prefix == "Key" and rest.isalpha() and rest.isupper():
        return rest.lower()
    if prefix in ("Digit", "Numpad") and rest.isdigit():
        return rest if prefix == "Digit" else f"KP_{rest}"
    if code.startswith("F") and code[1:].isdigit() and 1 <= int(code[1:]) <= 24:
        return code
    return None


@dataclass(frozen=True)
class GamepadKeymap:
    """Which keys a gamepad holds: buttons (standard-mapping index) and axis directions.

    `axes` maps an axis index to the codes held below -threshold and above +threshold.
    """

    buttons: Mapping[int, str]
    axes: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    threshold: float = 0.5

    def __post_init__(self) -> None:
        codes = [*self.buttons.values(), *(c for pair in self.axes.values() for c in pair)]
        unmapped = sorted({code for code in codes if keysym_name(code) is None})
        if unmapped:
            raise ValueError(f"gamepad keymap names keys with no X keysym: {unmapped}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"gamepad threshold must be in (0, 1), got {self.threshold}")

    def held(self, state: GamepadState) -> frozenset[str]:
        """The codes this pad state holds down."""
        held = {c for i, c in self.buttons.items() if i < len(state.buttons)
                and state.buttons[i] > self.threshold}  # fmt: skip
        for index, (negative, positive) in self.axes.items():
            value = state.axes[index] if index < len(state.axes) else 0.0
            if value < -self.threshold:
                held.add(negative)
            elif value > self.threshold:
                held.add(positive)
        return frozenset(held)


DEFAULT_GAMEPAD_KEYMAP = GamepadKeymap(
    buttons={0: "Space", 1: "KeyX", 2: "KeyZ", 3: "KeyC", 4: "KeyQ", 5: "KeyE", 8: "Tab",
             9: "Enter", 12: "ArrowUp", 13: "ArrowDown", 14: "ArrowLeft", 15: "ArrowRight"},
    axes={0: ("ArrowLeft", "ArrowRight"), 1: ("ArrowUp", "ArrowDown")},
)  # fmt: skip


class HeldKeys:
    """Which keys are down, by source (keyboard, gamepad); returns the X transitions to make."""

    def __init__(self) -> None:
        self.keyboard: set[str] = set()
        self.pad: frozenset[str] = frozenset()

    def key(self, code: str, down: bool) -> list[tuple[str, bool]]:
        was_down = code in self.keyboard or code in self.pad
        (self.keyboard.add if down else self.keyboard.discard)(code)
        is_down = code in self.keyboard or code in self.pad
        return [] if was_down == is_down else [(code, is_down)]

    def gamepad(self, held: frozenset[str]) -> list[tuple[str, bool]]:
        before, self.pad = self.pad, held
        changed = (before ^ held) - self.keyboard
        return [(code, code in held) for code in sorted(changed)]

    def release_all(self) -> list[tuple[str, bool]]:
        down = sorted(self.keyboard | self.pad)
        self.keyboard, self.pad = set(), frozenset()
        return [(code, False) for code in down]


class InputLog:
    """When the server had processed each input `seq`; thread-safe.

    Times are Unix microseconds: the clock x11grab stamps its grabs with (window_capture).
    """

    def __init__(self, entries: int = INPUT_LOG_ENTRIES) -> None:
        self._entries: deque[tuple[int, int]] = deque(maxlen=entries)
        self._floor = 0  # the sequence of the newest entry that fell off the end
        self._lock = threading.Lock()

    def record(self, seq: int, at_us: int) -> None:
        with self._lock:
            if self._entries and seq <= self._entries[-1][1]:
                return  # a late, lower seq: the highest applied stays as it was
            if len(self._entries) == self._entries.maxlen:
                self._floor = self._entries[0][1]
            self._entries.append((at_us, seq))

    def sequence_before(self, at_us: int) -> int:
        """The highest seq processed at or before `at_us`; 0 when none."""
        with self._lock:
            for recorded_at, seq in reversed(self._entries):
                if recorded_at <= at_us:
                    return seq
            return self._floor


class XTestInput:
    """Injects events into X display `display_name`, whose screen is `width` x `height`.

    `push` is called on the event loop and never blocks; an owned thread injects. Leaving
    (or `stop`) releases every key and button still held, so no key sticks in the build.
    """

    def __init__(
        self,
        display_name: str,
        width: int,
        height: int,
    ) -> None:
        self.display_name = display_name
        self.width, self.height = width, height
        self.keymap = DEFAULT_GAMEPAD_KEYMAP
        self.log = InputLog()
        self.unmapped: set[str] = set()  # codes dropped for want of a keysym or keycode
        self._held = HeldKeys()
        self._buttons: set[int] = set()
        self._queue: deque[InputEvent] = deque(maxlen=MAX_QUEUED_EVENTS)
        self._ready = threading.Condition()
        self._closing = False
        self._display: Any = None
        self._keycodes: dict[str, int] = {}  # by keysym name
        self._thread: threading.Thread | None = None

    async def __aenter__(self) -> XTestInput:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        """Connect to the display and start the injecting thread (blocks for the connection)."""
        try:
            self._display = xdisplay.Display(self.display_name)
        except (DisplayError, OSError) as exc:
            raise XInputError(f"cannot connect to X display {self.display_name}: {exc}") from exc
        if not self._display.has_extension("XTEST"):
            self._display.close()
            raise XInputError(f"X display {self.display_name} has no XTEST extension")
        self._thread = threading.Thread(target=self._run, name="gamecast-xinput", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._ready:
            self._closing = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def push(self, event: InputEvent) -> None:
        with self._ready:
            self._queue.append(event)
            self._ready.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._ready:
                    self._ready.wait_for(lambda: self._queue or self._closing)
                    batch, closing = list(self._queue), self._closing
                    self._queue.clear()
                for event in batch:
                    self._inject(event)
                if closing:
                    self._release_all()
                self._display.sync()  # the server has now generated every event above
                if batch:
                    self.log.record(max(e.seq for e in batch), time.time_ns() // 1000)
                if closing:
                    return
        except Exception:
            log.exception("input injection into %s failed; input stops", self.display_name)
        finally:
            with contextlib.suppress(Exception):  # a display that went away fails to close
                self._display.close()

    def _inject(self, event: InputEvent) -> None:
        if isinstance(event, KeyEvent):
            self._keys(self._held.key(event.code, event.down))
        elif isinstance(event, GamepadState):
            self._keys(self._held.gamepad(self.keymap.held(event)))
        elif isinstance(event, PointerButton):
            (self._buttons.add if event.down else self._buttons.discard)(event.button)
            kind = X.ButtonPress if event.down else X.ButtonRelease
            xtest.fake_input(self._display, kind, X_BUTTONS[event.button])
        elif event.x is not None and event.y is not None:  # a PointerMove from here on
            x, y = round(event.x * (self.width - 1)), round(event.y * (self.height - 1))
            xtest.fake_input(self._display, X.MotionNotify, x=x, y=y)
        else:
            xtest.fake_input(self._display, X.MotionNotify, detail=True, x=event.dx, y=event.dy)

    def _keys(self, transitions: list[tuple[str, bool]]) -> None:
        for code, down in transitions:
            keycode = self._keycode(code)
            if keycode:
                xtest.fake_input(self._display, X.KeyPress if down else X.KeyRelease, keycode)

    def _keycode(self, code: str) -> int:
        """This display's keycode for `code`; 0 (and noted) when it has none."""
        name = keysym_name(code)
        if name is not None and name not in self._keycodes:  # a closed set: cached
            keysym = XK.string_to_keysym(name)
            self._keycodes[name] = self._display.keysym_to_keycode(keysym) if keysym else 0
        keycode = 0 if name is None else self._keycodes[name]
        if not keycode and len(self.unmapped) < UNMAPPED_KEPT:
            self.unmapped.add(code)
        return keycode

    def _release_all(self) -> None:
        self._keys(self._held.release_all())
        for button in sorted(self._buttons):
            xtest.fake_input(self._display, X.ButtonRelease, X_BUTTONS[button])
        self._buttons.clear()
