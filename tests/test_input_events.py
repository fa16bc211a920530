"""The data-channel input contract: every event type, and the exact error for each bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contracts.input_events import (
    MAX_MESSAGE_BYTES,
    GamepadState,
    InputError,
    InputEvent,
    KeyEvent,
    PointerButton,
    PointerMove,
    parse_input,
)

ABSENT = object()
BASES: dict[str, dict[str, Any]] = {
    "key": {"type": "key", "seq": 1, "code": "KeyW", "down": True},
    "absolute": {"type": "pointermove", "seq": 1, "x": 0.5, "y": 0.5},
    "relative": {"type": "pointermove", "seq": 1, "dx": 0, "dy": 0},
    "button": {"type": "pointerbutton", "seq": 1, "button": 0, "down": True},
    "gamepad": {"type": "gamepad", "seq": 1, "axes": [], "buttons": []},
}


def event(base: str, **changes: Any) -> str:
    """A valid event of kind `base` as JSON, with fields changed, added or (ABSENT) removed."""
    fields = {**BASES[base], **changes}
    return json.dumps({name: value for name, value in fields.items() if value is not ABSENT})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (event("key"), KeyEvent(1, "KeyW", True)),
        (
            event("key", seq=2, code="ArrowLeft", down=False, t=12.5),
            KeyEvent(2, "ArrowLeft", False),
        ),
        (event("key", code="K" * 32), KeyEvent(1, "K" * 32, True)),
        (event("key", seq=2**32 - 1, code="Space"), KeyEvent(2**32 - 1, "Space", True)),
        (b'{"type":"key","seq":3,"code":"KeyA","down":true}', KeyEvent(3, "KeyA", True)),
        (event("absolute", x=0, y=1), PointerMove(1, x=0.0, y=1.0)),
        (event("absolute", x=0.25), PointerMove(1, x=0.25, y=0.5)),
        (event("relative", dx=-4096, dy=4096), PointerMove(1, dx=-4096, dy=4096)),
        (event("button", button=4, down=False), PointerButton(1, 4, False)),
        (event("gamepad"), GamepadState(1, (), ())),
        (
            event("gamepad", axes=[-1, 0.5], buttons=[1, 0.25]),
            GamepadState(1, (-1.0, 0.5), (1.0, 0.25)),
        ),
        (
            event("gamepad", axes=[0] * 8, buttons=[1] * 32),
            GamepadState(1, (0.0,) * 8, (1.0,) * 32),
        ),
    ],
)
def test_valid_events(raw: str | bytes, expected: InputEvent) -> None:
    parsed = parse_input(raw)
    assert parsed == expected
    assert type(parsed) is type(expected)


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        ("x" * (MAX_MESSAGE_BYTES + 1), "too_large", "513 bytes exceeds 512"),
        ("{not json", "malformed", "not valid JSON"),
        (b"\xff\xfe\xfa", "malformed", "not valid JSON"),
        ("[1, 2]", "malformed", "must be a JSON object"),
        ("42", "malformed", "must be a JSON object"),
        (event("key", type="scroll"), "unknown_type", "unknown input type 'scroll'"),
        (event("key", type=ABSENT), "unknown_type", "unknown input type None"),
        (event("key", shift=True), "unknown_field", "unknown fields ['shift']"),
        (event("absolute", button=0), "unknown_field", "unknown fields ['button']"),
        (event("key", seq=ABSENT), "bad_field", "seq must be an integer"),
        (event("key", seq="1"), "bad_field", "seq must be an integer"),
        (event("key", seq=True), "bad_field", "seq must be an integer"),
        (event("key", seq=1.0), "bad_field", "seq must be an integer"),
        (event("key", down=1), "bad_field", "down must be true or false"),
        (event("key", code="Key-W"), "bad_field", "key code must be 1-32 letters or digits"),
        (event("key", code="K" * 33), "bad_field", "key code must be 1-32"),
        (event("key", code=""), "bad_field", "key code must be 1-32"),
        (event("key", code=87), "bad_field", "key code must be 1-32"),
        (event("button", button=True), "bad_field", "button must be an integer"),
        (event("button", button=1.0), "bad_field", "button must be an integer"),
        (event("absolute", x="0.5"), "bad_field", "x must be a number"),
        (event("absolute", y=False), "bad_field", "y must be a number"),
        (event("absolute", y=ABSENT), "bad_field", "y must be a number"),
        (event("relative", dx=1.5), "bad_field", "dx must be an integer"),
        (event("relative", dy=ABSENT), "bad_field", "dy must be an integer"),
        (event("absolute", dx=1, dy=1), "bad_field", "either x and y, or dx and dy"),
        (event("absolute", y=ABSENT, dy=1), "bad_field", "either x and y, or dx and dy"),
        (event("absolute", x=ABSENT, y=ABSENT), "bad_field", "either x and y, or dx and dy"),
        (event("gamepad", axes="0"), "bad_field", "axes must be a list of at most 8 numbers"),
        (event("gamepad", axes=[0] * 9), "bad_field", "axes must be a list of at most 8 numbers"),
        (event("gamepad", buttons=[0] * 33), "bad_field", "buttons must be a list of at most 32"),
        (event("key", seq=0), "out_of_range", "seq=0 is outside [1, 4294967295]"),
        (event("key", seq=2**32), "out_of_range", "seq=4294967296 is outside [1, 4294967295]"),
        (event("absolute", x=1.5), "out_of_range", "x=1.5 is outside [0.0, 1.0]"),
        (event("absolute", y=-0.01), "out_of_range", "y=-0.01 is outside [0.0, 1.0]"),
        ('{"type":"pointermove","seq":1,"x":NaN,"y":0.5}', "out_of_range", "x=nan is outside"),
        ('{"type":"pointermove","seq":1,"x":0,"y":Infinity}', "out_of_range", "y=inf is outside"),
        (event("relative", dx=5000), "out_of_range", "dx=5000 is outside [-4096, 4096]"),
        (event("relative", dy=-4097), "out_of_range", "dy=-4097 is outside [-4096, 4096]"),
        (event("button", button=5), "out_of_range", "button=5 is outside [0, 4]"),
        (event("button", button=-1), "out_of_range", "button=-1 is outside [0, 4]"),
        (event("gamepad", axes=[0, 2]), "out_of_range", "axes value must be a number in [-1.0, 1]"),
        (event("gamepad", axes=[-1.5]), "out_of_range", "every axes value must be a number"),
        (
            event("gamepad", buttons=[-0.5]),
            "out_of_range",
            "buttons value must be a number in [0.0, 1]",
        ),
        (event("gamepad", axes=["0"]), "out_of_range", "every axes value must be a number"),
        (event("gamepad", buttons=[True]), "out_of_range", "every buttons value must be a number"),
        ('{"type":"gamepad","seq":1,"axes":[NaN],"buttons":[]}', "out_of_range", "axes value"),
    ],
)
def test_invalid_events(raw: str | bytes, code: str, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_input(raw)
    assert caught.value.code == code
    assert fragment in caught.value.reason
    assert str(caught.value) == caught.value.reason


@pytest.mark.parametrize(
    ("raw", "seq"),
    [
        ("x" * (MAX_MESSAGE_BYTES + 1), None),
        (event("key", seq=0), None),
        (event("key", seq=7, shift=True), 7),
        (event("button", seq=8, button=9), 8),
    ],
)
def test_error_carries_the_seq_once_it_is_known(raw: str, seq: int | None) -> None:
    with pytest.raises(InputError) as caught:
        parse_input(raw)
    assert caught.value.seq == seq


def test_size_limit_counts_utf8_bytes_of_text() -> None:
    raw = json.dumps({**BASES["key"], "t": "\u20ac" * 200}, ensure_ascii=False)
    assert len(raw.encode()) > MAX_MESSAGE_BYTES
    with pytest.raises(InputError) as caught:
        parse_input(raw)
    assert caught.value.code == "too_large"
