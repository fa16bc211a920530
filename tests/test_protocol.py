"""The signaling contract: round trips, who may send what, and the exact error for bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contracts import protocol as p
from contracts.protocol import MESSAGES, ProtocolError, Role, parse_message

STATS = p.PlayerStats(
    fps=59.5,
    width=1280,
    height=720,
    bitrate_kbps=5400.0,
    rtt_ms=None,
    jitter_buffer_ms=9.5,
    decode_ms=2.25,
    frames_decoded=1200,
    frames_dropped=3,
    freezes=1,
    g2g_p50_ms=-1.5,
    codec="video/H264",
)
EXAMPLES: list[p.Message] = [
    p.Play("tetris", 1920, 1080, 120),
    p.Play("tetris", policy="lowest-cost", budget_per_minute=0.05, rtt_bound_ms=40),
    p.Offer("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"),
    p.End("s1", "bored"),
    p.Register("c1", ["tetris", "doom"], ["h264", "vp8"], 3840, 2160, 144),
    p.Register("c2", ["tetris"], ["h264"], 1920, 1080, 60, region="eu-west", price_per_minute=0.02),
    p.Challenge("q6Jx0mX2v1zA8Yl4s9Kc3w"),
    p.Queued(2, "standby", "no container is on standby", 120),
    p.Probe([p.ProbeTarget("c1", "http://10.0.0.5:9000/probe")], 3),
    p.Probed([p.ProbeSample("c1", 12.5)]),
    p.Enlist("v1", 100),
    p.Enlisted("v1", 900.0),
    p.Assignment("a1b2", "c1", "bot", 60000, ticket="t0k3n", game="reference"),
    p.Assignment("a1b3", "c1", "live", 60000, session="i1.s1"),
    p.PlayerStatsReport(STATS),
    p.SessionTimings("i1.s1", [1000.0, 1016.67, 1033.5], [4.25, 3.9]),
    p.SessionSample("i1.s1", "c1", 60, 2.0, [1000.0, 1016.67], [4.25], [STATS, STATS]),
    p.VerdictReport(
        "a1b2",
        "c1",
        "bot",
        [p.FindingRecord("fps", False, "60", "30.2", "30.2 fps, asked 60")],
        [p.Metric("fps", 30.2)],
    ),
    p.InspectionChallenge("a1b2.v1", "00" * 32, 1024, 8, 16, "2 CPU cores", 4170),
    p.InspectionCommitment("a1b2.v1", "ab" * 32, p.HostSpecs("AMD EPYC", 2, 24000, []), False),
    p.InspectionReveal("a1b2.v1", [3, 77]),
    p.InspectionRows("a1b2.v1", [p.RevealedRowRecord(3, "0f" * 512, ["cd" * 32] * 10)]),
    p.Heartbeat(),
    p.Answer("s1", "v=0\r\n"),
    p.Playing("s1"),
    p.Maintenance("the container is shutting down"),
    p.BuildEvent("crashed", "arcade", "1.0.2", "ab" * 32, "i1.s1", detail="exited with code 1"),
    p.BuildEvent("limit_killed", "arcade", "1.0.2", session="i1.s2", limit="memory"),
    p.BuildEvent("planted", sha256="cd" * 32, detail="a folder no blob proves"),
    p.Matched("s1", "c1"),
    p.Registered("c1", 2000),
    p.SessionOffer("s1", "v=0\r\n", 1280, 720, 60),
    p.SessionAnswer("s1", "v=0\r\n"),
    p.SessionState("s1", "playing"),
    p.Ended("s1", "the player disconnected"),
    p.Error("unexpected", "send play first", "offer"),
]
SENDS = [(message, role) for message in EXAMPLES for role in message.senders]


def wire(message_type: str, **fields: Any) -> str:
    return json.dumps({"v": 1, "type": message_type, **fields})


def test_every_message_has_an_example() -> None:
    assert {m.type for m in EXAMPLES} == set(MESSAGES)


@pytest.mark.parametrize(("message", "role"), SENDS, ids=lambda v: getattr(v, "type", v))
def test_round_trip(message: p.Message, role: Role) -> None:
    assert parse_message(message.to_json(), role) == message
    assert parse_message(message.to_json().encode(), role) == message


def test_golden_json() -> None:
    assert p.Play("tetris").to_json() == (
        '{"v":1,"type":"play","game":"tetris","width":1280,"height":720,"fps":60,'
        '"policy":"best-overall","rtt_bound_ms":80,"probe":false,"ticket":"","marker":true}'
    )
    assert p.Heartbeat().to_json() == '{"v":1,"type":"heartbeat"}'


def test_defaults() -> None:
    assert parse_message(wire("play", game="tetris"), "player") == p.Play("tetris", 1280, 720, 60)
    assert parse_message(wire("end"), "player") == p.End("", "ended by peer")
    assert parse_message(wire("error", code="x", reason="y"), "server") == p.Error("x", "y", "")


@pytest.mark.parametrize(
    ("message_type", "role"),
    [
        ("register", "player"),
        ("heartbeat", "player"),
        ("answer", "player"),
        ("play", "container"),
        ("offer", "container"),
        ("matched", "player"),
        ("registered", "container"),
        ("session_offer", "player"),
        ("player_stats", "container"),
        ("session_timings", "player"),
        ("build_event", "player"),
        ("build_event", "server"),
        ("session_sample", "verifier"),
        ("ended", "player"),
        ("error", "container"),
        ("play", "server"),
        ("register", "server"),
    ],
)
def test_role_enforcement(message_type: str, role: Role) -> None:
    example = next(m for m in EXAMPLES if m.type == message_type)
    with pytest.raises(ProtocolError) as caught:
        parse_message(example.to_json(), role)
    assert caught.value.code == "unknown_type"
    assert f"a {role} cannot send '{message_type}'" in caught.value.reason


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        ("x" * (p.MAX_MESSAGE_BYTES + 1), "too_large", "65537 bytes exceeds 65536"),
        ("{", "malformed", "not valid JSON"),
        (b"\xff", "malformed", "not valid JSON"),
        ("[]", "malformed", "must be a JSON object"),
        ("null", "malformed", "must be a JSON object"),
        ('{"type":"end"}', "unsupported_version", "protocol version None is not 1"),
        ('{"v":2,"type":"end"}', "unsupported_version", "protocol version 2 is not 1"),
        ('{"v":"1","type":"end"}', "unsupported_version", "protocol version '1' is not 1"),
        ('{"v":1}', "unknown_type", "a player cannot send None"),
        (
            wire("nope"),
            "unknown_type",
            "a player cannot send 'nope'; expected one of "
            "['end', 'offer', 'play', 'player_stats', 'probed']",
        ),
        ('{"v":1,"type":["play"]}', "unknown_type", "a player cannot send ['play']"),
        (wire("play"), "bad_field", "play needs field 'game'"),
        (wire("offer"), "bad_field", "offer needs field 'sdp'"),
        (wire("play", game=5), "bad_field", "play.game must be a string"),
        (wire("play", game="g" * 65), "bad_field", "play.game is longer than 64 characters"),
        (wire("play", game="g", width="1280"), "bad_field", "play.width must be an integer"),
        (wire("play", game="g", width=1280.0), "bad_field", "play.width must be an integer"),
        (wire("play", game="g", fps=True), "bad_field", "play.fps must be an integer"),
        (wire("play", game="g", width=319), "bad_field", "play.width=319 is outside [320, 3840]"),
        (
            wire("play", game="g", height=2161),
            "bad_field",
            "play.height=2161 is outside [180, 2160]",
        ),
        (wire("play", game="g", fps=0), "bad_field", "play.fps=0 is outside [1, 240]"),
        (wire("play", game="g", mode="vr"), "bad_field", "play has unknown fields ['mode']"),
        (wire("end", session="s" * 129), "bad_field", "end.session is longer than 128 characters"),
        (
            wire("offer", sdp="a" * (p.MAX_SDP_BYTES + 1)),
            "bad_field",
            "offer.sdp is longer than 49152",
        ),
    ],
)
def test_refused_from_player(raw: str | bytes, code: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message(raw, "player")
    assert caught.value.code == code
    assert fragment in caught.value.reason


def register(**changes: Any) -> str:
    fields = {
        "container": "c1",
        "games": ["tetris"],
        "encoders": ["h264"],
        "max_width": 1920,
        "max_height": 1080,
        "max_fps": 60,
        **changes,
    }
    return wire("register", **fields)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (register(games="tetris"), "register.games must be a list of at most 64 strings"),
        (register(games=["g"] * 65), "register.games must be a list of at most 64 strings"),
        (register(encoders=["h264"] * 9), "register.encoders must be a list of at most 8 strings"),
        (register(games=[1]), "register.games must be a string"),
        (register(encoders=["e" * 33]), "register.encoders is longer than 32 characters"),
        (register(max_width=7681), "register.max_width=7681 is outside [320, 7680]"),
        (register(max_fps=False), "register.max_fps must be an integer"),
        (wire("heartbeat", load=0.5), "heartbeat has unknown fields ['load']"),
        (register(frames_on="tpu"), "register.frames_on='tpu' is not one of ['cpu', 'gpu']"),
        (register(encoder_reason="r" * 257), "register.encoder_reason is longer than 256"),
        (register(capacity={}), "register.capacity must be a list of at most 64 objects"),
        (
            register(capacity=[{"width": 1280, "height": 720, "fps": 60, "sessions": 0}]),
            "register.capacity[0].sessions=0 is outside [1, 64]",
        ),
        (
            register(capacity=[{"width": 1280, "height": 720, "fps": 60}]),
            "register.capacity[0] needs field 'sessions'",
        ),
        (wire("answer", session="s1"), "answer needs field 'sdp'"),
    ],
)
def test_refused_from_container(raw: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message(raw, "container")
    assert caught.value.code == "bad_field"
    assert fragment in caught.value.reason


@pytest.mark.parametrize(
    "raw",
    [
        register(games=["g" * 64] * 64, encoders=["e" * 32] * 8, max_width=7680, max_fps=240),
        register(games=[], encoders=[], max_width=320, max_height=180, max_fps=1),
    ],
    ids=["upper-limits", "lower-limits"],
)
def test_limits_are_inclusive(raw: str) -> None:
    assert isinstance(parse_message(raw, "container"), p.Register)


def test_a_container_that_predates_capacity_registers_for_one_session_at_a_time() -> None:
    message = parse_message(register(), "container")
    assert isinstance(message, p.Register)
    assert (message.capacity, message.frames_on, message.encoder_reason) == ([], "cpu", "")
    full = p.Register("c1", ["g"], ["x264"], 1280, 720, 60, None, "why", "gpu",
                      [p.StreamCapacity(1280, 720, 60, 3)])  # fmt: skip
    assert parse_message(full.to_json(), "container") == full


def test_boolean_version_is_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message('{"v":true,"type":"heartbeat"}', "container")
    assert caught.value.code == "unsupported_version"


def test_size_limit_counts_utf8_bytes_of_text() -> None:
    raw = json.dumps({"v": 1, "type": "offer", "sdp": "\u20ac" * 40_000}, ensure_ascii=False)
    assert len(raw.encode()) > p.MAX_MESSAGE_BYTES
    with pytest.raises(ProtocolError) as caught:
        parse_message(raw, "player")
    assert caught.value.code == "too_large"


def stats_wire(**changes: Any) -> str:
    """A player_stats message as the page sends it, with `changes` to its record."""
    return wire("player_stats", stats={**json.loads(p.PlayerStatsReport(STATS).to_json())["stats"],
                                       **changes})  # fmt: skip


def test_the_page_s_summary_has_one_golden_form() -> None:
    assert json.loads(p.PlayerStatsReport(STATS).to_json()) == {
        "v": 1,
        "type": "player_stats",
        "stats": {
            "fps": 59.5, "width": 1280, "height": 720, "bitrate_kbps": 5400.0, "rtt_ms": None,
            "jitter_buffer_ms": 9.5, "decode_ms": 2.25, "frames_decoded": 1200,
            "frames_dropped": 3, "freezes": 1, "g2g_p50_ms": -1.5, "codec": "video/H264",
        },
    }  # fmt: skip


def test_figures_the_page_lacks_may_be_null_or_nan_and_read_as_none() -> None:
    lacking = {"rtt_ms": None, "g2g_p50_ms": None, "bitrate_kbps": None, "decode_ms": None}
    message = parse_message(stats_wire(**lacking, jitter_buffer_ms=float("nan")), "player")
    assert isinstance(message, p.PlayerStatsReport)
    assert message.stats == p.PlayerStats(
        59.5, 1280, 720, None, None, None, None, 1200, 3, 1, None, "video/H264"
    )


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (wire("player_stats"), "player_stats needs field 'stats'"),
        (wire("player_stats", stats=[]), "player_stats.stats must be an object"),
        (stats_wire(fps=None), "player_stats.stats.fps must be a number"),
        (stats_wire(fps=float("nan")), "player_stats.stats.fps=nan is outside [0.0, 1000.0]"),
        (stats_wire(fps=1000.5), "player_stats.stats.fps=1000.5 is outside [0.0, 1000.0]"),
        (stats_wire(width=-2), "player_stats.stats.width=-2 is outside [0, 7680]"),
        (stats_wire(rtt_ms=-1), "player_stats.stats.rtt_ms=-1.0 is outside [0.0, 10000.0]"),
        (stats_wire(rtt_ms="21"), "player_stats.stats.rtt_ms must be a number"),
        (
            stats_wire(g2g_p50_ms=2.0**31 + 1),
            "player_stats.stats.g2g_p50_ms=2147483649.0 is outside [-2147483648.0, 2147483648.0]",
        ),
        (stats_wire(freezes=1.5), "player_stats.stats.freezes must be an integer"),
        (stats_wire(frames_decoded=-1), "player_stats.stats.frames_decoded=-1 is outside [0, "),
        (stats_wire(codec="c" * 33), "player_stats.stats.codec is longer than 32 characters"),
        (stats_wire(hdr=True), "player_stats.stats has unknown fields ['hdr']"),
    ],
)
def test_a_bad_summary_is_refused(raw: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message(raw, "player")
    assert caught.value.code == "bad_field"
    assert fragment in caught.value.reason


def timings_wire(**changes: Any) -> str:
    return wire("session_timings", **{"session": "s1", "frame_times_ms": [1.0],
                                      "encode_ms": [2.0], **changes})  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (timings_wire(encode_ms=None), "session_timings.encode_ms must be a list of at most "
         "1200 numbers"),
        (timings_wire(frame_times_ms=[0.0] * 1201), "session_timings.frame_times_ms must be a "
         "list of at most 1200 numbers"),
        (timings_wire(frame_times_ms=[1.0, "2"]), "session_timings.frame_times_ms must be a "
         "number"),
        (timings_wire(frame_times_ms=[-0.5]), "session_timings.frame_times_ms=-0.5 is outside "
         "[0.0, 1000000000000.0]"),
        (timings_wire(encode_ms=[60_000.5]), "session_timings.encode_ms=60000.5 is outside "
         "[0.0, 60000.0]"),
        (timings_wire(encode_ms=[float("nan")]), "session_timings.encode_ms=nan is outside "
         "[0.0, 60000.0]"),
        (wire("session_timings", session="s1", encode_ms=[]), "session_timings needs field "
         "'frame_times_ms'"),
    ],
)  # fmt: skip
def test_bad_timings_are_refused_with_the_exact_reason(raw: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message(raw, "container")
    assert (caught.value.code, caught.value.reason) == ("bad_field", reason)


def test_a_full_live_sample_fits_in_one_message() -> None:
    """The indexer keeps at most MAX_TIMINGS of each timing, rounded to 10 us, and
    MAX_SUMMARIES summaries: the largest sample it can serve still parses."""
    counts = (p.MAX_COUNT, p.MAX_COUNT, p.MAX_COUNT)
    widest = p.PlayerStats(
        999.99, 7680, 4320, 9_999_999.99, 9999.99, 59_999.99, 59_999.99, *counts,
        -2147483647.99, "c" * 32,
    )  # fmt: skip
    sample = p.SessionSample(
        "i" * p.MAX_TEXT, "c" * 64, 240, 86_399.999,
        [999_999_999_999.99] * p.MAX_TIMINGS, [59_999.99] * p.MAX_TIMINGS,
        [widest] * p.MAX_SUMMARIES,
    )  # fmt: skip
    assert len(sample.to_json()) < p.MAX_MESSAGE_BYTES
    assert parse_message(sample.to_json(), "server") == sample


def build_event_wire(**changes: Any) -> str:
    return wire("build_event", **{"kind": "hash_refused", "build": "arcade", "version": "1",
                                  **changes})  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (wire("build_event"), "build_event needs field 'kind'"),
        (build_event_wire(kind="exploded"), "build_event.kind='exploded' is not one of "
         "['crashed', 'limit_killed', 'hash_refused', 'planted']"),
        (build_event_wire(detail="x" * (p.MAX_TEXT + 1)), "build_event.detail is longer than 128 "
         "characters"),
        (build_event_wire(build="b" * 65), "build_event.build is longer than 64 characters"),
        (build_event_wire(sha256="a" * 65), "build_event.sha256 is longer than 64 characters"),
        (build_event_wire(kind="limit_killed", limit="disk"), "build_event.limit='disk' is not "
         "one of ['', 'memory', 'processes', 'cpu_time']"),
        (build_event_wire(kind="limit_killed"), "build_event.limit names the limit of a "
         "limit_killed event, and only"),
        (build_event_wire(kind="crashed", limit="memory"), "build_event.limit names the limit of "
         "a limit_killed event, and only"),
        (build_event_wire(detail=["x"]), "build_event.detail must be a string"),
        (build_event_wire(count=10**9), "build_event has unknown fields ['count']"),
    ],
)  # fmt: skip
def test_a_hostile_build_event_is_refused_with_the_exact_reason(raw: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message(raw, "container")
    assert (caught.value.code, caught.value.reason) == ("bad_field", reason)


def test_a_build_event_at_its_limits_parses() -> None:
    widest = p.BuildEvent("limit_killed", "b" * 64, "v" * 32, "f" * 64, "s" * p.MAX_TEXT,
                          "processes", "d" * p.MAX_TEXT)  # fmt: skip
    assert parse_message(widest.to_json(), "container") == widest
