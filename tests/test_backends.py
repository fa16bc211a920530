"""Encoder backends: the host is probed for real; NVENC's absence is reported with FFmpeg's reason.

This machine has no NVIDIA driver, so the real probe fails here, which is what CI checks. The
probe is the one boundary replaced (by a Probe value) to show what an NVENC host would choose.
"""

from __future__ import annotations

import fractions
import logging
import re

import av
import numpy as np
import pytest

from contracts.marker import FrameMarker, paint_marker_i420, read_marker
from contracts.planes import i420_planes
from reference_game.game import ReferenceGame
from streamer.backends import (
    BackendError,
    Probe,
    choose_encoder,
    nvenc_unavailable_reason,
    probe_nvenc,
)
from streamer.encoder import BT601, BT709, NVENC, X264, LowLatencyH264Encoder
from tests.samples import H264Receiver

WORKING_NVENC = Probe("nvenc", True, "h264_nvenc opened and encoded a test frame")
# FFmpeg's nvenc.c and its loader, as PyAV hands on the last error line.
FFMPEG_NVENC_FAILURE = (
    r"\[h264_nvenc\] (Cannot load (libcuda|libnvidia-encode)\.so\.1"
    r"|No (NVENC )?capable devices found|OpenEncodeSessionEx failed: unsupported device.*)"
)


def _no_nvenc_here() -> str:
    reason = nvenc_unavailable_reason()
    if reason is None:
        pytest.skip("this host has a working NVENC: the fallback cannot be observed")
    return reason


def test_probe_opens_nvenc_for_real_and_says_why_it_failed() -> None:
    reason = _no_nvenc_here()
    probe = probe_nvenc()
    assert probe == Probe("nvenc", False, reason)
    # FFmpeg's own words name the missing piece: no driver (as here), or a driver and no
    # NVENC (an H100: the session is refused as an unsupported device).
    assert re.fullmatch(FFMPEG_NVENC_FAILURE, reason), reason


def test_auto_falls_back_to_x264_and_logs_the_reason(caplog) -> None:
    reason = _no_nvenc_here()
    with caplog.at_level(logging.INFO, logger="streamer.backends"):
        choice = choose_encoder("auto")
    assert choice.backend == "x264"
    assert reason in choice.reason
    assert f"video encoder: x264 (NVENC unavailable: {reason})" in caplog.messages


def test_an_explicit_nvenc_request_falls_back_too_and_says_it_was_asked_for() -> None:
    reason = _no_nvenc_here()
    choice = choose_encoder("nvenc")
    assert (choice.backend, choice.reason) == (
        "x264",
        f"asked for nvenc, but NVENC unavailable: {reason}",
    )


@pytest.mark.parametrize("requested", ["auto", "nvenc"])
def test_a_host_whose_nvenc_works_streams_with_it(requested: str) -> None:
    choice = choose_encoder(requested, probe=lambda: WORKING_NVENC)
    assert (choice.backend, choice.reason) == ("nvenc", WORKING_NVENC.reason)


@pytest.mark.parametrize("requested", ["x264", "aiortc"])
def test_an_operator_choice_of_a_cpu_encoder_is_not_probed(requested: str) -> None:
    def probe() -> Probe:
        raise AssertionError("probed although the operator chose a CPU encoder")

    assert choose_encoder(requested, probe=probe).backend == requested


def test_an_unknown_encoder_is_refused_with_the_choices() -> None:
    with pytest.raises(BackendError, match="auto, nvenc, x264, aiortc"):
        choose_encoder("quicksync")


def _frame(picture: np.ndarray, format: str) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(picture, format=format)
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 60)
    return frame


def _decode(encoder: LowLatencyH264Encoder, frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
    """Encode `frames` (the first as an IDR) and decode them back as a browser would."""
    receiver = H264Receiver()
    decoded = []
    for index, frame in enumerate(frames):
        decoded += receiver.decode(encoder.encode_frame(frame, keyframe=index == 0))
    decoded += receiver.flush()
    assert len(decoded) == len(frames)
    return decoded


def _split_on_start_codes(annex_b: bytes) -> list[bytes]:
    """Split an Annex-B bitstream on its start codes (00 00 00 01 or 00 00 01)."""
    return [nal for nal in re.split(b"\x00\x00\x00?\x01", annex_b) if nal]


@pytest.mark.parametrize(("colour", "expected"), [(BT601, 6), (BT709, 1)])
def test_the_stream_signals_its_colour_and_constrained_baseline(colour, expected) -> None:
    encoder = LowLatencyH264Encoder(X264, colour)
    frame = _frame(np.full((144 * 3 // 2, 256), 128, np.uint8), "yuv420p")
    encoded = encoder.encode_frame(frame, keyframe=True)
    nal_units = _split_on_start_codes(H264Receiver.annex_b(encoded))
    sps = next(nal for nal in nal_units if nal[0] & 0x1F == 7)
    assert sps[1] == 66 and sps[2] & 0x40  # profile_idc Baseline, constraint_set1: Constrained
    (decoded,) = _decode(LowLatencyH264Encoder(X264, colour), [frame])
    assert (decoded.colorspace, decoded.color_primaries, decoded.color_trc) == (expected,) * 3
    assert decoded.color_range == 1  # limited ("MPEG") range


def _marked_nv12(width: int, height: int, sequence: int) -> np.ndarray:
    picture = ReferenceGame(width, height, seed=3).render_i420()
    paint_marker_i420(picture, FrameMarker.at(sequence, 1234, 0))
    y, u, v = i420_planes(picture)
    return np.concatenate([y, np.stack([u, v], axis=-1).reshape(u.shape[0], -1)])


def test_nv12_in_host_memory_is_encoded_as_it_is_with_the_marker_intact() -> None:
    # The path of a GPU without NVENC: NV12 copied to the host once, handed to x264 as NV12.
    nv12 = _marked_nv12(256, 144, 7)
    (decoded,) = _decode(LowLatencyH264Encoder(X264, BT601), [_frame(nv12, "nv12")])
    assert read_marker(decoded.to_ndarray(format="yuv420p")[:144]) == FrameMarker.at(7, 1234, 0)


@pytest.mark.nvenc
def test_nvenc_encodes_cuda_frames_without_a_host_copy_and_the_marker_survives() -> None:
    import cupy  # noqa: PLC0415  (only where a GPU is)

    frames = []
    for sequence in range(3):
        nv12 = cupy.asarray(_marked_nv12(1280, 720, sequence))  # one contiguous buffer
        frame = av.VideoFrame.from_dlpack((nv12[:720], nv12[720:]), format="nv12")
        frame.pts, frame.time_base = sequence, fractions.Fraction(1, 60)
        assert frame.format.name == "cuda"
        frames.append(frame)
    decoded = _decode(LowLatencyH264Encoder(NVENC, BT601), frames)
    markers = [read_marker(f.to_ndarray(format="yuv420p")[:720]) for f in decoded]
    assert markers == [FrameMarker.at(sequence, 1234, 0) for sequence in range(3)]
