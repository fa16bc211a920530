"""Which encoder a container streams with, decided once at start from what the host really has.

NVENC cannot be judged from a name: FFmpeg lists h264_nvenc on every machine, creating its codec
context succeeds without a GPU, and H100/H200/A100 have a driver and no NVENC at all
(shared/FIELD-NOTES.md). So the probe opens the encoder with the streaming settings and
encodes one frame; only that proves it. The choice and the reason are logged once and
reported at registration, so an operator sees why a GPU host streams with x264.
"""

from __future__ import annotations

import fractions
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import av
import av.logging
import numpy as np

from streamer.encoder import ENCODERS, NVENC, LowLatencyH264Encoder
from streamer.errors import StreamerError

log = logging.getLogger(__name__)

CHOICES = ("auto", *ENCODERS)  # what `gamecast container --encoder` accepts
_PROBE_SIZE = (256, 144)  # small enough to cost nothing, large enough for every encoder


class BackendError(StreamerError, RuntimeError):
    """The encoder the operator asked for cannot be used, and nothing can stand in for it."""


@dataclass(frozen=True, slots=True)
class Probe:
    """The outcome of really opening one encoder and encoding one frame with it."""

    backend: str
    available: bool
    reason: str


@dataclass(frozen=True, slots=True)
class EncoderChoice:
    backend: str  # "nvenc", "x264" or "aiortc": what sessions use
    reason: str  # why, in words an operator can act on

    def describe(self) -> str:
        return f"video encoder: {self.backend} ({self.reason})"


def probe_nvenc() -> Probe:
    """Open h264_nvenc with gamecast's low-latency settings and encode one frame."""
    width, height = _PROBE_SIZE
    frame = av.VideoFrame.from_ndarray(
        np.full((height * 3 // 2, width), 128, np.uint8), format="nv12"
    )
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 60)
    previous_level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # FFmpeg's own line says why, e.g. no libcuda
    try:
        with av.logging.Capture():  # ...and becomes the reason, not an ERROR in the log
            encoded = LowLatencyH264Encoder(NVENC).encode_frame(frame, keyframe=True)
    except (av.FFmpegError, OSError, ValueError) as exc:
        return Probe("nvenc", False, _ffmpeg_reason(exc))
    finally:
        av.logging.set_level(previous_level)
    if not encoded.keyframe or encoded.size == 0:
        return Probe("nvenc", False, "h264_nvenc opened but returned no keyframe for one frame")
    return Probe("nvenc", True, "h264_nvenc opened and encoded a test frame")


@functools.cache
def host_nvenc() -> Probe:
    """This host's NVENC, probed once per process (every agent and test shares the answer)."""
    return probe_nvenc()


def nvenc_unavailable_reason() -> str | None:
    """None where NVENC works on this host; else why not."""
    probe = host_nvenc()
    return None if probe.available else probe.reason


def choose_encoder(requested: str, probe: Callable[[], Probe] = host_nvenc) -> EncoderChoice:
    """Resolve `requested` (one of CHOICES) against the host; logs the choice and its reason.

    "auto" takes NVENC where it works, else x264. An explicit "nvenc" that does not work falls
    back to x264 as well, saying why: a container that streams beats one that refuses to start.
    `probe` is the one boundary tests replace, standing in for an NVENC-capable GPU.
    """
    if requested not in CHOICES:
        raise BackendError(f"unknown encoder {requested!r}; choose one of {', '.join(CHOICES)}")
    if requested in ("x264", "aiortc"):
        choice = EncoderChoice(requested, "chosen by the operator")
    else:
        result = probe()
        if result.available:
            choice = EncoderChoice("nvenc", result.reason)
        else:
            asked = "asked for nvenc, but " if requested == "nvenc" else ""
            choice = EncoderChoice("x264", f"{asked}NVENC unavailable: {result.reason}")
    log.info(choice.describe())
    return choice


def _ffmpeg_reason(exc: Exception) -> str:
    """FFmpeg's last error line when PyAV attached it (the actionable part), else the error."""
    text = str(exc)
    marker = "last error log: "
    return text.split(marker, 1)[1].strip() if marker in text else text
