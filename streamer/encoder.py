"""The encoder seam: how gamecast puts its own low-latency H.264 encoder inside aiortc.

aiortc's sender looks up `aiortc.rtcrtpsender.get_encoder(codec)` when its first frame
arrives. gamecast replaces that one lookup: for H.264 it returns LowLatencyH264Encoder, whose
`pack` sends what the streamer's pipeline (streamer/pipeline.py) already encoded in its own
thread; for VP8 a tuned version of aiortc's encoder, which aiortc drives itself. It is not a
public aiortc API, so this module is the only place that touches it, and
tests/test_stream_e2e.py fails loudly if an upgrade moves it. Receiver feedback reaches the
pipeline's encoder through streamer/rtcp_feedback.py.

Why not aiortc's own H.264 encoder: preset medium, a 1/30 time base, a 3 Mb/s clamp and a
fresh IDR on every >10 % bitrate change (shared/FIELD-NOTES.md). Ours: libx264 ultrafast +
zerolatency, Constrained Baseline, no B-frames, no periodic IDR, IDR only on request, the
stream's real frame rate as time base, bitrate changed in place without an IDR.
"""

from __future__ import annotations

import fractions
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import aiortc.rtcrtpsender as _sender_module
import av
from aiortc.codecs import get_encoder as stock_get_encoder
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av.video.codeccontext import VideoCodecContext

from streamer.errors import StreamerError

log = logging.getLogger(__name__)

# x264 and nvenc: ours (streamer/backends.py picks); aiortc: the library's stock encoders.
ENCODERS = ("nvenc", "x264", "aiortc")
BITS_PER_PIXEL = 0.1  # enough for crisp 720p60 game content at ~5.5 Mb/s
MIN_BITRATE = 1_000_000
MAX_BITRATE = 25_000_000
_RECONFIGURE_FRACTION = 0.1
# No periodic IDR (keyframes only on PLI/FIR), no B-frames; SPS/PPS with every IDR so a
# receiver that joins or recovers can decode at once.
X264_PARAMS = "keyint=infinite:min-keyint=infinite:scenecut=0:bframes=0:repeat-headers=1"
INFINITE_GOP = 2**31 - 1  # NVENC: no periodic IDR either


@dataclass(frozen=True, slots=True)
class ColourDescription:
    """What the stream's VUI tells decoders about its pixels (FFmpeg's enum values)."""

    primaries: int
    transfer: int
    matrix: int
    limited_range: bool = True


BT601 = ColourDescription(
    primaries=6, transfer=6, matrix=6
)  # the CPU game (reference_game/colour.py)
BT709 = ColourDescription(primaries=1, transfer=1, matrix=1)  # the GPU path's NV12


@dataclass(frozen=True, slots=True)
class H264Backend:
    """One H.264 implementation and how it is opened for real-time play."""

    name: str  # what the container reports: "x264" or "nvenc"
    codec: str  # FFmpeg's encoder
    options: Callable[[int], dict[str, str]]  # bitrate ceiling -> FFmpeg options


def _x264_options(ceiling: int) -> dict[str, str]:
    return {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",  # x264's baseline is Constrained Baseline: what aiortc offers
        "forced-idr": "1",
        "maxrate": str(ceiling),
        "bufsize": str(ceiling // 10),  # 100 ms of VBV: bounds frame size, hence latency
        "x264-params": X264_PARAMS,
    }


def _nvenc_options(ceiling: int) -> dict[str, str]:
    # shared/FIELD-NOTES.md: FFmpeg's NVENC buffers frames (delay), turns B-frames on and
    # forces non-IDR keyframes unless told otherwise.
    return {
        "preset": "p1",
        "tune": "ull",
        "profile": "baseline",
        "zerolatency": "1",
        "delay": "0",
        "forced-idr": "1",
        "rc": "cbr",
        "rc-lookahead": "0",
        "g": str(INFINITE_GOP),
        "maxrate": str(ceiling),
        "bufsize": str(ceiling // 10),
    }


X264 = H264Backend("x264", "libx264", _x264_options)
NVENC = H264Backend("nvenc", "h264_nvenc", _nvenc_options)
H264_BACKENDS = {backend.name: backend for backend in (X264, NVENC)}


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One access unit, packetized: what the streamer's pipeline hands aiortc to send."""

    payloads: list[bytes]  # RFC 6184 RTP payloads
    timestamp: int  # RTP clock (90 kHz), from the frame's pts
    keyframe: bool
    size: int  # bytes of H.264 bitstream


class EncoderHookError(StreamerError, RuntimeError):
    """aiortc no longer looks encoders up where this module hooks in; update the seam."""


def bitrate_for(width: int, height: int, fps: float) -> int:
    return int(min(MAX_BITRATE, max(MIN_BITRATE, width * height * fps * BITS_PER_PIXEL)))


class LowLatencyH264Encoder(Encoder):
    """H.264 for real-time play (x264 or NVENC); opens itself from the first frame.

    Frames must carry time_base = 1/fps (the streamer's track does); the codec uses that same
    time base so rate control sees the real frame rate. The pixel format is the frame's own:
    yuv420p or nv12 from host memory, or cuda (NV12 in GPU memory, NVENC only), so no frame is
    converted or copied on its way in.
    """

    def __init__(self, backend: H264Backend = X264, colour: ColourDescription = BT601) -> None:
        self.backend = backend
        self.colour = colour
        self._codec: Any = None
        self._opened: Any = None  # the codec whose opening was logged
        self._lock = threading.Lock()
        self._requested_bitrate: int | None = None
        self._ceiling = MAX_BITRATE
        self.frames_encoded = 0

    @property
    def target_bitrate(self) -> int:
        return int(self._codec.bit_rate) if self._codec is not None else 0

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        # Called from the event loop on REMB; applied by the encode thread before its next frame.
        with self._lock:
            self._requested_bitrate = bitrate

    def encode_frame(self, frame: Any, keyframe: bool = False) -> EncodedFrame:
        """Encode one yuv420p frame into RTP payloads (the streamer's encode thread calls this)."""
        timestamp = convert_timebase(frame.pts, frame.time_base, VIDEO_TIME_BASE)
        codec = self._codec_for(frame)
        self._apply_requested_bitrate(codec)
        frame.pict_type = (
            av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        )
        packets = codec.encode(frame)  # opens the codec on its first frame
        if codec is not self._opened:  # said once it really opened, and again if reopened
            self._opened = codec
            log.info(
                "%s encoder: %dx%d@%s from %s, up to %.1f Mb/s", self.backend.name,
                codec.width, codec.height, codec.framerate, codec.pix_fmt, self._ceiling / 1e6,
            )  # fmt: skip
        bitstream = b"".join(bytes(packet) for packet in packets)
        self.frames_encoded += 1
        return EncodedFrame(
            _rtp_payloads(bitstream),
            timestamp,
            keyframe=any(packet.is_keyframe for packet in packets),
            size=len(bitstream),
        )

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        """aiortc's encoder interface, for a track that hands aiortc raw frames."""
        encoded = self.encode_frame(frame, force_keyframe)
        return encoded.payloads, encoded.timestamp

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        """What aiortc calls for a frame the streamer's own pipeline has already encoded."""
        if not isinstance(packet, EncodedFrame):
            raise TypeError(f"expected an EncodedFrame from the streamer, got {type(packet)}")
        return packet.payloads, packet.timestamp

    def _codec_for(self, frame: Any) -> Any:
        codec = self._codec
        if codec is not None and (codec.width, codec.height) == (frame.width, frame.height):
            return codec
        fps = fractions.Fraction(1, 1) / frame.time_base
        ceiling = bitrate_for(frame.width, frame.height, float(fps))
        backend, colour = self.backend, self.colour
        codec = cast(VideoCodecContext, av.CodecContext.create(backend.codec, "w"))
        codec.width, codec.height = frame.width, frame.height
        codec.pix_fmt = frame.format.name
        codec.time_base = frame.time_base
        codec.framerate = fps
        codec.bit_rate = ceiling
        codec.max_b_frames = 0
        codec.color_primaries, codec.color_trc = colour.primaries, colour.transfer
        codec.colorspace = colour.matrix
        codec.color_range = 1 if colour.limited_range else 2  # AVCOL_RANGE_MPEG / _JPEG
        codec.options = backend.options(ceiling)
        self._codec, self._ceiling = codec, ceiling
        return codec

    def _apply_requested_bitrate(self, codec: Any) -> None:
        with self._lock:
            requested, self._requested_bitrate = self._requested_bitrate, None
        if requested is None:
            return
        bitrate = max(MIN_BITRATE, min(self._ceiling, requested))
        if abs(bitrate - codec.bit_rate) > _RECONFIGURE_FRACTION * codec.bit_rate:
            codec.bit_rate = bitrate  # libx264 reconfigures in place: no IDR


class FallbackVp8Encoder(Vp8Encoder):
    """aiortc's VP8 with a bitrate range fit for the stream instead of its 0.25-1.5 Mb/s clamp.

    Only used when a player cannot take H.264. It keeps aiortc's behaviour otherwise, including
    a fresh keyframe on every >10 % bitrate change; aiortc sizes its rate-control buffer from
    its own 500 kb/s default, which at our ceiling is ~90 ms: tighter, which suits low latency.
    """

    def __init__(self) -> None:
        super().__init__()
        self._bitrate: int | None = None
        self._ceiling = MAX_BITRATE
        self._geometry: tuple[int, int, Any] | None = None

    @property
    def target_bitrate(self) -> int:
        return self._bitrate if self._bitrate is not None else self._ceiling

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._bitrate = max(MIN_BITRATE, min(self._ceiling, bitrate))

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        geometry = (frame.width, frame.height, frame.time_base)
        if geometry != self._geometry:  # once per stream shape, not per frame
            self._geometry = geometry
            fps = float(fractions.Fraction(1, 1) / frame.time_base)
            self._ceiling = bitrate_for(frame.width, frame.height, fps)
        return super().encode(frame, force_keyframe)


def _rtp_payloads(bitstream: bytes) -> list[bytes]:
    """RFC 6184 payloads (single NAL, STAP-A, FU-A), by aiortc's own packetizer."""
    return H264Encoder._packetize(H264Encoder._split_bitstream(bitstream))


def _gamecast_get_encoder(codec: RTCRtpCodecParameters) -> Encoder:
    mime_type = codec.mimeType.lower()
    if mime_type == "video/h264":
        return LowLatencyH264Encoder()
    if mime_type == "video/vp8":
        return FallbackVp8Encoder()
    return stock_get_encoder(codec)


def encoder_in_use(sender: Any) -> Encoder | None:
    """The encoder an aiortc sender is using (None before its first frame)."""
    try:
        return sender._RTCRtpSender__encoder  # type: ignore[no-any-return]
    except AttributeError:
        raise EncoderHookError(
            "RTCRtpSender no longer keeps its encoder where streamer/encoder.py looks"
        ) from None


def install_encoder(name: str) -> None:
    """Make every aiortc sender in this process use encoder `name` (one of ENCODERS)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODERS}")
    if not callable(getattr(_sender_module, "get_encoder", None)):
        raise EncoderHookError(
            "aiortc.rtcrtpsender.get_encoder is gone in this aiortc version: "
            "streamer/encoder.py must be ported before gamecast can pick its encoder"
        )
    hook = stock_get_encoder if name == "aiortc" else _gamecast_get_encoder
    _sender_module.get_encoder = hook  # type: ignore[attr-defined]
    log.debug("aiortc's encoder lookup now gives %s", name)  # the choice is logged where made
