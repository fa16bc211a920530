"""Scripted input for bot sessions: timed keyboard, mouse and gamepad events, and their JSON form.

A trace is what a bot plays, so that two verifiers (or one verifier on two days) put a container
through exactly the same thing. Each event is the data-channel JSON the browser sends
(contracts/input_events.py) without its `seq`, which the player numbers when it sends, plus
`at_ms`, its offset from the start of play. Events are validated with the very parser the
container uses, so a trace that loads is a trace the container accepts.

File format (UTF-8 JSON):

    {"version": 1, "name": "...", "tail_ms": 600,
     "events": [{"at_ms": 500, "type": "key", "code": "KeyD", "down": true}, ...]}

`tail_ms` is how long the bot keeps watching after the last event, so that its reaction
reaches the screen and gets measured.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from contracts.input_events import InputError, InputEvent, parse_input
from verifier.errors import VerifierError

TRACE_VERSION = 1
MAX_TRACE_MS = 120_000.0  # a bot session is a probe, not a play-through
MAX_EVENTS = 2_000
MAX_TAIL_MS = 10_000.0
DEFAULT_TAIL_MS = 600.0


class TraceError(VerifierError, ValueError):
    """A trace file or trace data is unusable; the message names the event and the fix."""


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One input to send `at_ms` after play starts: the data-channel JSON, without `seq`."""

    at_ms: float
    message: Mapping[str, Any]

    def numbered(self, seq: int) -> InputEvent:
        """The event as the container parses it once the player has numbered it `seq`."""
        return parse_input(json.dumps({**self.message, "seq": seq}))


@dataclass(frozen=True, slots=True)
class InputTrace:
    """Events in the order they are sent; times never go backwards."""

    name: str
    events: tuple[TraceEvent, ...]
    tail_ms: float = DEFAULT_TAIL_MS

    @property
    def duration_ms(self) -> float:
        """From the start of play until the bot stops watching."""
        return (self.events[-1].at_ms if self.events else 0.0) + self.tail_ms

    def to_json(self) -> str:
        events = [{"at_ms": event.at_ms, **event.message} for event in self.events]
        body = {"version": TRACE_VERSION, "name": self.name, "tail_ms": self.tail_ms}
        return json.dumps({**body, "events": events}, indent=1)


def parse_trace(text: str) -> InputTrace:
    """An InputTrace from its JSON text; raises TraceError saying what is wrong and where."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise TraceError(f"a trace must be JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TraceError("a trace must be a JSON object with 'version', 'name' and 'events'")
    if data.get("version") != TRACE_VERSION:
        raise TraceError(f"trace version {data.get('version')!r} is not supported; use 1")
    name = data.get("name", "")
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise TraceError("the trace 'name' must be a string of 1 to 64 characters")
    tail = _milliseconds(data.get("tail_ms", DEFAULT_TAIL_MS), "tail_ms", MAX_TAIL_MS)
    raw_events = data.get("events")
    if not isinstance(raw_events, list) or not 1 <= len(raw_events) <= MAX_EVENTS:
        raise TraceError(f"'events' must be a list of 1 to {MAX_EVENTS} events")
    events = tuple(_event(index, raw) for index, raw in enumerate(raw_events))
    for index in range(1, len(events)):
        if events[index].at_ms < events[index - 1].at_ms:
            raise TraceError(
                f"event {index} at {events[index].at_ms} ms comes before event {index - 1} at "
                f"{events[index - 1].at_ms} ms: list events in the order they are sent"
            )
    return InputTrace(name, events, tail)


def load_trace(path: str | Path) -> InputTrace:
    """Read and validate a trace file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read the trace {path}: {exc}") from None
    try:
        return parse_trace(text)
    except TraceError as exc:
        raise TraceError(f"{path}: {exc}") from None


def _milliseconds(value: Any, name: str, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise TraceError(f"{name} must be a number of milliseconds")
    if not 0 <= value <= high:
        raise TraceError(f"{name}={value} is outside [0, {high:g}] ms")
    return float(value)


def _event(index: int, raw: Any) -> TraceEvent:
    if not isinstance(raw, dict):
        raise TraceError(f"event {index} must be a JSON object")
    message = {key: value for key, value in raw.items() if key != "at_ms"}
    if "seq" in message:
        raise TraceError(f"event {index} has a 'seq': the player numbers events when it sends")
    at_ms = _milliseconds(raw.get("at_ms"), f"event {index} at_ms", MAX_TRACE_MS)
    event = TraceEvent(at_ms, MappingProxyType(message))
    try:
        event.numbered(1)
    except InputError as exc:
        raise TraceError(f"event {index} is not valid input: {exc.reason}") from None
    return event


def _key(at_ms: float, code: str, down: bool) -> dict[str, Any]:
    return {"at_ms": at_ms, "type": "key", "code": code, "down": down}


def _button(at_ms: float, button: int, down: bool) -> dict[str, Any]:
    return {"at_ms": at_ms, "type": "pointerbutton", "button": button, "down": down}


def _pad(at_ms: float, axes: list[float], buttons: list[float]) -> dict[str, Any]:
    return {"at_ms": at_ms, "type": "gamepad", "axes": axes, "buttons": buttons}


# About 8 s touching every control of the reference game (reference_game/game.py), 300-500 ms apart
# so each reaction shows before the next input: keys move the player square and Space flashes
# it; the pointer moves the crosshair (absolute, then relative) and buttons fill it; the
# gamepad's stick moves the player, button A flashes it and buttons light the lamps.
_DEFAULT_EVENTS = [
    _key(500, "KeyD", True), _key(900, "KeyD", False),
    _key(1300, "KeyS", True), _key(1600, "KeyS", False),
    _key(2000, "Space", True), _key(2150, "Space", False),
    {"at_ms": 2500, "type": "pointermove", "x": 0.25, "y": 0.3},
    _button(2900, 0, True), _button(3200, 0, False),
    {"at_ms": 3600, "type": "pointermove", "x": 0.75, "y": 0.6},
    _button(4000, 2, True), _button(4300, 2, False),
    _pad(4700, [1.0, 0.0], [0.0]),
    _pad(5100, [0.0, 0.0], [1.0, 0.0, 0.0, 1.0]),
    _pad(5500, [0.0, 0.0], [0.0, 0.0, 0.0, 0.0]),
    _key(5900, "ArrowLeft", True), _key(6300, "ArrowLeft", False),
    {"at_ms": 6700, "type": "pointermove", "dx": -100, "dy": 50},
    _key(7100, "KeyW", True), _key(7400, "KeyW", False),
]  # fmt: skip
DEFAULT_TRACE = parse_trace(
    json.dumps({"version": TRACE_VERSION, "name": "reference-tour", "events": _DEFAULT_EVENTS})
)
