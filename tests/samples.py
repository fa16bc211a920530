"""Sample data and round trips that several test modules share."""

from __future__ import annotations

import fractions
import json
from collections.abc import Iterable

import aiohttp
import av
import numpy as np
from aiortc.codecs.h264 import H264PayloadDescriptor

from contracts import protocol as p
from contracts.input_events import KeyEvent, PointerButton, PointerMove
from contracts.protocol import MAX_MESSAGE_BYTES, Enlist, Register
from contracts.signing import HostCredentials
from indexer.keys import KeyStore
from indexer.lifecycle import Event
from node.runtime import RunningServer
from reference_game.game import ReferenceGame
from streamer.encoder import EncodedFrame

# One L4's telemetry as the protocol carries it (NVML's units already converted).
L4_TELEMETRY = p.GpuTelemetry(
    index=0,
    name="NVIDIA L4",
    uuid="GPU-3f1c6a2e-0000-4000-8000-000000000000",
    memory_total_mib=23_034,
    memory_used_mib=1_288,
    gpu_util_percent=31,
    memory_util_percent=12,
    temperature_c=48,
    power_w=35.417,
    power_limit_w=72.0,
    graphics_clock_mhz=2040,
    sm_clock_mhz=2040,
    memory_clock_mhz=6250,
    encoder_util_percent=18,
    encoder_sessions=2,
    encoder_fps=119,
    encoder_latency_us=1830,
    encoder_capacity_h264=80,
    encoder_capacity_hevc=75,
    encoder_capacity_av1=70,
)


class H264Receiver:
    """Depacketizes (with aiortc's own RFC 6184 depacketizer) and decodes EncodedFrames as a
    receiver would, in order."""

    def __init__(self) -> None:
        self.codec = av.CodecContext.create("h264", "r")

    @staticmethod
    def annex_b(frame: EncodedFrame) -> bytes:
        """The access unit's NAL units as an Annex-B bitstream (each after a start code)."""
        return b"".join(H264PayloadDescriptor.parse(payload)[1] for payload in frame.payloads)

    def decode(self, frame: EncodedFrame) -> list[av.VideoFrame]:
        return list(self.codec.decode(av.Packet(self.annex_b(frame))))

    def flush(self) -> list[av.VideoFrame]:
        """The pictures the decoder still holds at the end of the stream."""
        return list(self.codec.decode(None))


def played(game: ReferenceGame, pointer: tuple[float, float] = (0.3, 0.6)) -> ReferenceGame:
    """`game` after a few inputs and frames: the player moved, the crosshair filled."""
    for event in (
        KeyEvent(1, "KeyD", True),
        PointerMove(2, x=pointer[0], y=pointer[1]),
        PointerButton(3, 0, True),
    ):
        game.apply(event)
    for _ in range(25):
        game.advance()
    return game


def h264_round_trip(frames: Iterable[av.VideoFrame]) -> list[np.ndarray]:
    """Encode `frames` with plain libx264 (in their own pixel format) and decode them back:
    the luma planes a receiver gets, in order."""
    encoder, decoder = None, av.CodecContext.create("h264", "r")
    decoded: list[av.VideoFrame] = []
    for index, frame in enumerate(frames):
        if encoder is None:
            encoder = av.CodecContext.create("libx264", "w")
            encoder.width, encoder.height = frame.width, frame.height
            encoder.pix_fmt = frame.format.name
            encoder.time_base = fractions.Fraction(1, 60)
            encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "32"}
        frame.pts = index
        for packet in encoder.encode(frame):
            decoded += decoder.decode(packet)
    assert encoder is not None, "no frames to encode"
    for packet in encoder.encode(None):
        decoded += decoder.decode(packet)
    decoded += decoder.decode(None)
    return [np.asarray(f.to_ndarray(format="yuv420p")[: f.height], np.uint8) for f in decoded]


async def challenge_of(ws: aiohttp.ClientWebSocketResponse) -> str:
    """The challenge a container socket opens with (a registration must answer it)."""
    message = await ws.receive_json()
    assert message["type"] == "challenge", message
    return str(message["challenge"])


def host_credentials(server: RunningServer, host: str = "test-host") -> HostCredentials:
    """A fresh key for `host`, issued in the running server's key store."""
    assert server.host_keys is not None, "this server takes unsigned registrations"
    store = KeyStore.load(server.host_keys)
    _, key_file = store.issue(host, "2026-11-24T00:00:00+00:00")
    store.save()
    return HostCredentials.parse(key_file)


def signed(register: Register | Enlist, credentials: HostCredentials, challenge: str) -> str:
    """`register` (or a verifier's Enlist) as a peer holding `credentials` sends it on a socket
    opened with `challenge`."""
    return credentials.signed(register, challenge).to_json()


# The events that move one session's seat rather than the container (apply_seat's), in the
# enum's order: a seeded walk that picks among them stays the same walk from run to run.
SEAT_EVENTS: tuple[Event, ...] = (Event.CLAIMED, Event.SESSION_STARTED, Event.SESSION_ENDED)


# Hostile signaling: each raw message a player may send, and the code of the error it earns.
BAD_SIGNALING = [
    ("{not json", "malformed"),
    ("[1, 2]", "malformed"),
    ('{"type": "play", "game": "reference"}', "unsupported_version"),
    ('{"v": 1, "type": "launch_missiles"}', "unknown_type"),
    ('{"v": 1, "type": "register", "container": "x"}', "unknown_type"),
    ('{"v": 1, "type": "play", "game": 7}', "bad_field"),
    ('{"v": 1, "type": "play", "game": "reference", "fps": 100000}', "bad_field"),
    ('{"v": 1, "type": "play", "game": "reference", "evil": true}', "bad_field"),
    ('{"v": 1, "type": "offer", "sdp": "v=0"}', "unexpected"),
    ('{"v": 1, "type": "play", "game": "reference", "width": 1281}', "bad_field"),
    ("[" * 60_000, "malformed"),
    (json.dumps({"v": 1, "type": "offer", "sdp": "x" * (MAX_MESSAGE_BYTES + 10)}), "too_large"),
]


def heartbeat(**changes: object) -> str:
    """A heartbeat whose telemetry is valid but for `changes` (readings left out are None)."""
    gpu = {"index": 0, "name": "NVIDIA L4", "uuid": "GPU-1", "memory_total_mib": 23_034}
    telemetry = {"cpu_percent": 5.0, "ram_used_mib": 10, "gpus": [gpu]}
    return json.dumps({"v": 1, "type": "heartbeat", "telemetry": {**telemetry, **changes}})


GPU = json.loads(heartbeat())["telemetry"]["gpus"][0]
BAD_TELEMETRY = [
    (heartbeat(cpu_percent=1e9), "bad_field", "cpu_percent=1000000000.0 is outside"),
    (heartbeat(cpu_percent={"$gt": 0}), "bad_field", "cpu_percent must be a number"),
    (heartbeat(ram_used_mib=-5), "bad_field", "ram_used_mib=-5 is outside"),
    (
        heartbeat(gpus=[GPU] * 17),
        "bad_field",
        "gpus must be a list of at most 16 objects",
    ),
    (
        heartbeat(gpus=[{**GPU, "temperature_c": 10**6}]),
        "bad_field",
        "temperature_c=1000000",
    ),
    (
        heartbeat(gpus=[{**GPU, "name": "<script>" * 20}]),
        "bad_field",
        "name is longer than 96",
    ),
    (
        heartbeat(gpus=[{**GPU, "shell": "rm -rf /"}]),
        "bad_field",
        "unknown fields ['shell']",
    ),
    (heartbeat(gpus=[[GPU]]), "bad_field", "gpus[0] must be an object"),
    (heartbeat(gpus=[{**GPU, "name": "n" * 5000}] * 16), "too_large", "exceeds 65536"),
]
