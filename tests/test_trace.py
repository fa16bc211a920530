"""Input traces: the default tour, the JSON form round trip, and every refusal's message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.input_events import GamepadState, KeyEvent, PointerButton, PointerMove
from verifier.trace import DEFAULT_TRACE, InputTrace, TraceError, load_trace, parse_trace


def trace_json(events: object, **extra: object) -> str:
    return json.dumps({"version": 1, "name": "t", "events": events, **extra})


def test_the_default_trace_tours_every_control_in_about_eight_seconds() -> None:
    events = DEFAULT_TRACE.events
    assert (len(events), DEFAULT_TRACE.duration_ms) == (20, 8000.0)
    times = [event.at_ms for event in events]
    assert times == sorted(times) and times[0] == 500.0
    parsed = [event.numbered(seq) for seq, event in enumerate(events, start=1)]
    assert {type(event) for event in parsed} == {KeyEvent, PointerMove, PointerButton,
                                                  GamepadState}  # fmt: skip
    assert [event.seq for event in parsed] == list(range(1, 21))
    assert parsed[0] == KeyEvent(1, "KeyD", True)
    assert parsed[17] == PointerMove(18, dx=-100, dy=50)


def test_json_round_trip_and_loading_a_file(tmp_path: Path) -> None:
    text = DEFAULT_TRACE.to_json()
    assert parse_trace(text) == DEFAULT_TRACE
    path = tmp_path / "tour.json"
    path.write_text(text)
    assert load_trace(path) == DEFAULT_TRACE
    short = parse_trace(trace_json([{"at_ms": 0, "type": "key", "code": "KeyA", "down": True}]))
    assert short == InputTrace("t", short.events, 600.0)
    assert dict(short.events[0].message) == {"type": "key", "code": "KeyA", "down": True}


KEY = {"type": "key", "code": "KeyA", "down": True}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "a trace must be JSON: Expecting property name enclosed in double quotes: "
              "line 1 column 2 (char 1)"),
        ("[]", "a trace must be a JSON object with 'version', 'name' and 'events'"),
        (json.dumps({"version": 2, "name": "t", "events": []}),
         "trace version 2 is not supported; use 1"),
        (json.dumps({"version": 1, "events": [{"at_ms": 0, **KEY}]}),
         "the trace 'name' must be a string of 1 to 64 characters"),
        (trace_json([]), "'events' must be a list of 1 to 2000 events"),
        (trace_json([[0, "key"]]), "event 0 must be a JSON object"),
        (trace_json([KEY]), "event 0 at_ms must be a number of milliseconds"),
        (trace_json([{"at_ms": -5, **KEY}]), "event 0 at_ms=-5 is outside [0, 120000] ms"),
        (trace_json([{"at_ms": 10, **KEY}, {"at_ms": 5, **KEY}]),
         "event 1 at 5.0 ms comes before event 0 at 10.0 ms: list events in the order they are "
         "sent"),
        (trace_json([{"at_ms": 0, "seq": 3, **KEY}]),
         "event 0 has a 'seq': the player numbers events when it sends"),
        (trace_json([{"at_ms": 0, "type": "jump"}]),
         "event 0 is not valid input: unknown input type 'jump'; expected one of "
         "['gamepad', 'key', 'pointerbutton', 'pointermove']"),
        (trace_json([{"at_ms": 0, "type": "key", "code": "Key-A", "down": True}]),
         "event 0 is not valid input: key code must be 1-32 letters or digits "
         "(KeyboardEvent.code)"),
        (trace_json([{"at_ms": 0, **KEY}], tail_ms=60_000),
         "tail_ms=60000 is outside [0, 10000] ms"),
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else value,
)  # fmt: skip
def test_invalid_traces_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(TraceError) as raised:
        parse_trace(text)
    assert str(raised.value) == message


def test_a_file_that_cannot_be_read_or_parsed_names_itself(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(TraceError) as raised:
        load_trace(missing)
    assert str(raised.value) == (
        f"cannot read the trace {missing}: [Errno 2] No such file or directory: '{missing}'"
    )
    bad = tmp_path / "bad.json"
    bad.write_text(trace_json([]))
    with pytest.raises(TraceError) as raised:
        load_trace(bad)
    assert str(raised.value) == f"{bad}: 'events' must be a list of 1 to 2000 events"
