"""The signaling contract, version 1: every JSON message on the player and container WebSockets.

Each message is a JSON object `{"v": 1, "type": ..., <fields>}`. The records below are the
single definition: the server parses with them, and the web client imports the same names and
limits from /protocol.js, which is generated from this module.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal

VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024  # an SDP with many candidates is ~10 kB
MAX_SDP_BYTES = 48 * 1024
MAX_TEXT = 128
MAX_LIST = 64

Role = Literal["player", "container", "server"]


class ProtocolError(ValueError):
    """A message was refused; `code` is stable for programs, `reason` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    type: ClassVar[str]
    senders: ClassVar[tuple[Role, ...]]

    def to_json(self) -> str:
        return json.dumps({"v": VERSION, "type": self.type, **asdict(self)}, separators=(",", ":"))


# Player -> server ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Play(Message):
    """Ask for a container that hosts `game`, streaming at the given size and rate."""

    type = "play"
    senders = ("player",)
    game: str = field(metadata={"max": 64})
    width: int = field(default=1280, metadata={"low": 320, "high": 3840, "even": True})
    height: int = field(default=720, metadata={"low": 180, "high": 2160, "even": True})
    fps: int = field(default=60, metadata={"low": 1, "high": 240})


@dataclass(frozen=True, slots=True)
class Offer(Message):
    """The player's WebRTC offer, with its ICE candidates gathered (non-trickle)."""

    type = "offer"
    senders = ("player",)
    sdp: str = field(metadata={"max": MAX_SDP_BYTES})


@dataclass(frozen=True, slots=True)
class End(Message):
    """Either side ends the session; a player's own session is implied, a container names it."""

    type = "end"
    senders = ("player", "container", "server")
    session: str = field(default="", metadata={"max": MAX_TEXT})
    reason: str = field(default="ended by peer", metadata={"max": MAX_TEXT})


# Container -> server ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Register(Message):
    type = "register"
    senders = ("container",)
    container: str = field(metadata={"max": 64})
    games: list[str] = field(metadata={"max": 64, "items": MAX_LIST})
    encoders: list[str] = field(metadata={"max": 32, "items": 8})
    max_width: int = field(metadata={"low": 320, "high": 7680})
    max_height: int = field(metadata={"low": 180, "high": 4320})
    max_fps: int = field(metadata={"low": 1, "high": 240})


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    type = "heartbeat"
    senders = ("container",)


@dataclass(frozen=True, slots=True)
class Answer(Message):
    type = "answer"
    senders = ("container",)
    session: str = field(metadata={"max": MAX_TEXT})
    sdp: str = field(metadata={"max": MAX_SDP_BYTES})


@dataclass(frozen=True, slots=True)
class Playing(Message):
    """The container's peer is connected and media flows."""

    type = "playing"
    senders = ("container",)
    session: str = field(metadata={"max": MAX_TEXT})


# Server -> player / container ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Matched(Message):
    type = "matched"
    senders = ("server",)
    session: str = field(metadata={"max": MAX_TEXT})
    container: str = field(metadata={"max": 64})


@dataclass(frozen=True, slots=True)
class Registered(Message):
    type = "registered"
    senders = ("server",)
    container: str = field(metadata={"max": 64})
    heartbeat_interval_ms: int = field(metadata={"low": 100, "high": 3_600_000})


@dataclass(frozen=True, slots=True)
class SessionOffer(Message):
    """The player's offer relayed to the container, with the stream it asked for."""

    type = "session_offer"
    senders = ("server",)
    session: str = field(metadata={"max": MAX_TEXT})
    sdp: str = field(metadata={"max": MAX_SDP_BYTES})
    width: int = field(metadata={"low": 320, "high": 3840, "even": True})
    height: int = field(metadata={"low": 180, "high": 2160, "even": True})
    fps: int = field(metadata={"low": 1, "high": 240})


@dataclass(frozen=True, slots=True)
class SessionAnswer(Message):
    type = "session_answer"
    senders = ("server",)
    session: str = field(metadata={"max": MAX_TEXT})
    sdp: str = field(metadata={"max": MAX_SDP_BYTES})


@dataclass(frozen=True, slots=True)
class SessionState(Message):
    type = "session_state"
    senders = ("server",)
    session: str = field(metadata={"max": MAX_TEXT})
    state: str = field(metadata={"max": 16})


@dataclass(frozen=True, slots=True)
class Ended(Message):
    type = "ended"
    senders = ("server",)
    session: str = field(metadata={"max": MAX_TEXT})
    reason: str = field(metadata={"max": MAX_TEXT})


@dataclass(frozen=True, slots=True)
class Error(Message):
    type = "error"
    senders = ("server",)
    code: str = field(metadata={"max": 32})
    reason: str = field(metadata={"max": 512})
    ref: str = field(
        default="", metadata={"max": MAX_TEXT}
    )  # the type of the message that caused it, when known


MESSAGES: dict[str, type[Message]] = {
    cls.type: cls
    for cls in (
        Play,
        Offer,
        End,
        Register,
        Heartbeat,
        Answer,
        Playing,
        Matched,
        Registered,
        SessionOffer,
        SessionAnswer,
        SessionState,
        Ended,
        Error,
    )
}


def parse_message(raw: str | bytes, role: Role) -> Message:
    """Validate one WebSocket message sent by a `role` peer (size, JSON, version, fields)."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting: Recursion
        raise ProtocolError("malformed", f"message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("malformed", "message must be a JSON object")
    version = data.get("v")
    if isinstance(version, bool) or version != VERSION:
        raise ProtocolError("unsupported_version", f"protocol version {version!r} is not {VERSION}")
    kind = data.get("type")
    cls = MESSAGES.get(kind) if isinstance(kind, str) else None
    if cls is None or role not in cls.senders:
        allowed = sorted(t for t, c in MESSAGES.items() if role in c.senders)
        raise ProtocolError(
            "unknown_type", f"a {role} cannot send {kind!r}; expected one of {allowed}"
        )
    return _build(cls, data)


def _build(cls: type[Message], data: dict[str, Any]) -> Message:
    specs = {f.name: f for f in fields(cls)}
    unknown = set(data) - {"v", "type", *specs}
    if unknown:
        raise ProtocolError("bad_field", f"{cls.type} has unknown fields {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name not in data:
            if spec.default is MISSING:
                raise ProtocolError("bad_field", f"{cls.type} needs field {name!r}")
            continue
        values[name] = _check(cls.type, name, data[name], spec.metadata)
    return cls(**values)


def _check(kind: str, name: str, value: Any, rules: Any) -> Any:
    if "low" in rules:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError("bad_field", f"{kind}.{name} must be an integer")
        if not rules["low"] <= value <= rules["high"]:
            raise ProtocolError(
                "bad_field", f"{kind}.{name}={value} is outside [{rules['low']}, {rules['high']}]"
            )
        if rules.get("even") and value % 2:
            # 4:2:0 video halves each dimension for chroma: x264 and libvpx refuse odd sizes.
            raise ProtocolError("bad_field", f"{kind}.{name}={value} must be even")
        return value
    if "items" in rules:
        if not isinstance(value, list) or len(value) > rules["items"]:
            raise ProtocolError(
                "bad_field", f"{kind}.{name} must be a list of at most {rules['items']} strings"
            )
        return [_check(kind, name, item, {"max": rules["max"]}) for item in value]
    if not isinstance(value, str):
        raise ProtocolError("bad_field", f"{kind}.{name} must be a string")
    if len(value) > rules["max"]:
        raise ProtocolError("bad_field", f"{kind}.{name} is longer than {rules['max']} characters")
    return value
