"""Player input events: the data-channel contract, validated before anything touches the game.

The browser sends one JSON object per event on an unordered, no-retransmit data channel. Every
event carries `seq`, numbered by the client from 1 within a session; the frame marker reports
the highest `seq` applied. Anything malformed raises InputError with a reason the client can
show; the session goes on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from contracts.errors import ContractError

MAX_MESSAGE_BYTES = 512
MAX_SEQUENCE = (1 << 32) - 1
MAX_KEY_CODE_LENGTH = 32
MAX_RELATIVE_MOVE = 4096
MAX_MOUSE_BUTTON = 4
MAX_GAMEPAD_AXES = 8
MAX_GAMEPAD_BUTTONS = 32
# Events waiting for a game to take them; a burst beyond this is dropped oldest-first (rate
# limits sit before it).
MAX_QUEUED_EVENTS = 1024
EVENTS_PER_SECOND = 500
EVENT_BURST = 250
_KEY_CODE = re.compile(r"[A-Za-z0-9]+")


class InputError(ContractError):
    """An input event was rejected; `code` is stable, the message says why."""

    def __init__(self, code: str, reason: str, seq: int | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.seq = seq


@dataclass(frozen=True, slots=True)
class KeyEvent:
    seq: int
    code: str  # a KeyboardEvent.code, e.g. "KeyW", "ArrowLeft", "Space"
    down: bool


@dataclass(frozen=True, slots=True)
class PointerMove:
    """Either an absolute position (x, y in [0, 1] of the picture) or a relative move in pixels."""

    seq: int
    x: float | None = None
    y: float | None = None
    dx: int = 0
    dy: int = 0


@dataclass(frozen=True, slots=True)
class PointerButton:
    seq: int
    button: int  # MouseEvent.button: 0 main, 1 auxiliary, 2 secondary, 3-4 back/forward
    down: bool


@dataclass(frozen=True, slots=True)
class GamepadState:
    """The whole state of the first gamepad (Gamepad API standard mapping)."""

    seq: int
    axes: tuple[float, ...]
    buttons: tuple[float, ...]


InputEvent = KeyEvent | PointerMove | PointerButton | GamepadState

# The JSON shape of each event type, mirrored by the web client through /protocol.js.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "key": ("seq", "code", "down"),
    "pointermove": ("seq", "x", "y", "dx", "dy"),
    "pointerbutton": ("seq", "button", "down"),
    "gamepad": ("seq", "axes", "buttons"),
}


def parse_input(raw: str | bytes) -> InputEvent:
    """Validate one data-channel message (size, JSON, type, fields, ranges) into an event."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
    if size > MAX_MESSAGE_BYTES:
        raise InputError("too_large", f"input message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting: Recursion
        raise InputError("malformed", f"input is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError("malformed", "input must be a JSON object")
    kind = data.get("type")
    if kind not in EVENT_FIELDS:
        raise InputError(
            "unknown_type", f"unknown input type {kind!r}; expected one of {sorted(EVENT_FIELDS)}"
        )
    seq = _integer(data, "seq", 1, MAX_SEQUENCE, None)
    unknown = set(data) - {"type", "t", *EVENT_FIELDS[kind]}
    if unknown:
        raise InputError("unknown_field", f"{kind} event has unknown fields {sorted(unknown)}", seq)
    if kind == "key":
        code = data.get("code")
        if (
            not isinstance(code, str)
            or len(code) > MAX_KEY_CODE_LENGTH
            or not _KEY_CODE.fullmatch(code)
        ):
            raise InputError(
                "bad_field", "key code must be 1-32 letters or digits (KeyboardEvent.code)", seq
            )
        return KeyEvent(seq, code, _boolean(data, "down", seq))
    if kind == "pointerbutton":
        return PointerButton(
            seq, _integer(data, "button", 0, MAX_MOUSE_BUTTON, seq), _boolean(data, "down", seq)
        )
    if kind == "pointermove":
        return _pointer_move(data, seq)
    return GamepadState(
        seq,
        _unit_values(data, "axes", -1.0, MAX_GAMEPAD_AXES, seq),
        _unit_values(data, "buttons", 0.0, MAX_GAMEPAD_BUTTONS, seq),
    )


def _pointer_move(data: dict[str, Any], seq: int) -> PointerMove:
    absolute = "x" in data or "y" in data
    relative = "dx" in data or "dy" in data
    if absolute == relative:
        raise InputError("bad_field", "pointermove needs either x and y, or dx and dy", seq)
    if relative:
        return PointerMove(
            seq,
            dx=_integer(data, "dx", -MAX_RELATIVE_MOVE, MAX_RELATIVE_MOVE, seq),
            dy=_integer(data, "dy", -MAX_RELATIVE_MOVE, MAX_RELATIVE_MOVE, seq),
        )
    return PointerMove(
        seq, x=_number(data, "x", 0.0, 1.0, seq), y=_number(data, "y", 0.0, 1.0, seq)
    )


def _integer(data: dict[str, Any], name: str, low: int, high: int, seq: int | None) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError("bad_field", f"{name} must be an integer", seq)
    if not low <= value <= high:
        raise InputError("out_of_range", f"{name}={value} is outside [{low}, {high}]", seq)
    return value


def _number(data: dict[str, Any], name: str, low: float, high: float, seq: int) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError("bad_field", f"{name} must be a number", seq)
    if not low <= value <= high:  # also rejects NaN
        raise InputError("out_of_range", f"{name}={value} is outside [{low}, {high}]", seq)
    return float(value)


def _boolean(data: dict[str, Any], name: str, seq: int) -> bool:
    value = data.get(name)
    if not isinstance(value, bool):
        raise InputError("bad_field", f"{name} must be true or false", seq)
    return value


def _unit_values(
    data: dict[str, Any], name: str, low: float, limit: int, seq: int
) -> tuple[float, ...]:
    values = data.get(name)
    if not isinstance(values, list) or len(values) > limit:
        raise InputError("bad_field", f"{name} must be a list of at most {limit} numbers", seq)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= 1.0:
            raise InputError(
                "out_of_range", f"every {name} value must be a number in [{low}, 1]", seq
            )
    return tuple(float(v) for v in values)
