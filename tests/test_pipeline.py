"""The sender pipeline's threads: pacing, encoding, keyframes, bitrate and the drop policy."""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from contracts.marker import read_marker
from contracts.planes import i420_planes
from streamer.encoder import X264, EncodedFrame
from streamer.pipeline import MAX_BACKLOG, SenderPipeline
from streamer.track import GameVideoTrack
from tests.samples import H264Receiver


async def frames_from(track: GameVideoTrack, count: int) -> list[EncodedFrame]:
    return [await track.recv() for _ in range(count)]


@pytest.fixture
def track():
    track = GameVideoTrack(640, 360, 60, seed=3)
    yield track
    track.stop()


async def test_encoded_frames_decode_in_order_with_their_markers(track) -> None:
    pipeline = track.start(X264)
    frames = await frames_from(track, 30)
    assert frames[0].keyframe and not any(f.keyframe for f in frames[1:])
    steps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(frames)]
    assert all(step > 0 and step % 1500 == 0 for step in steps)  # whole slots of 90 kHz / 60
    receiver = H264Receiver()
    decoded = [picture for f in frames for picture in receiver.decode(f)]
    sequences = [read_marker(i420_planes(p.to_ndarray())[0]).frame_sequence for p in decoded]
    assert len(sequences) == 30 and sequences == sorted(set(sequences))
    # A frame is missing only if the drop policy counted it (the encoder was busy).
    assert sequences[-1] + 1 - 30 <= pipeline.stats.dropped_before_encode


async def test_keyframe_requests_are_granted_once_per_interval(track) -> None:
    pipeline = track.start(X264)
    await frames_from(track, 5)
    for _ in range(4):  # a burst of PLIs
        pipeline.on_keyframe_request()
    frames = await frames_from(track, 10)  # 167 ms: inside one keyframe interval
    assert sum(f.keyframe for f in frames) == 1 and frames[0].keyframe
    assert (pipeline.keyframes.requested, pipeline.keyframes.granted) == (4, 1)


async def test_a_lower_estimate_shrinks_frames_without_a_keyframe() -> None:
    track = GameVideoTrack(1280, 720, 60, seed=3)
    pipeline = track.start(X264)
    try:
        before = await frames_from(track, 60)
        pipeline.on_estimate(1_200_000)
        after = await frames_from(track, 120)
    finally:
        track.stop()
    assert pipeline.bitrate is not None and pipeline.bitrate.target == 1_200_000
    assert not any(f.keyframe for f in after)
    mean_before = np.mean([f.size for f in before[10:]])
    mean_after = np.mean([f.size for f in after[60:]])  # once x264's rate control has settled
    assert mean_after < 0.5 * mean_before
    assert mean_after * 8 * 60 < 1.5 * 1_200_000


async def test_a_stalled_loop_restarts_the_stream_from_a_keyframe(track) -> None:
    pipeline = track.start(X264)
    receiver = H264Receiver()
    for frame in await frames_from(track, 5):
        receiver.decode(frame)
    await asyncio.sleep(0.25)  # the sender does not ask: ~15 encoded frames pile up
    frames = await frames_from(track, 10)
    assert pipeline.stats.backlog_flushes >= 1
    assert pipeline.stats.dropped_before_send >= MAX_BACKLOG
    assert frames[0].keyframe
    decoded = [picture for f in frames for picture in receiver.decode(f)]
    sequences = [read_marker(i420_planes(p.to_ndarray())[0]).frame_sequence for p in decoded]
    assert sequences == sorted(sequences) and len(sequences) == 10
    assert sequences[0] > 5 + MAX_BACKLOG  # the stale backlog was not sent


async def test_pacing_holds_the_rate_without_drift() -> None:
    """Three seconds at 60 fps: every slot of the clock is accounted for, in order."""
    produced: list[int] = []

    def produce(slot: int) -> int:
        produced.append(slot)
        return slot

    pipeline = SenderPipeline(produce, fps=60, encoder=None)
    started = time.monotonic()
    try:
        outputs = [await pipeline.next_output() for _ in range(180)]
    finally:
        pipeline.stop()
    elapsed_slots = (time.monotonic() - started) * 60
    stats = pipeline.stats
    assert outputs == sorted(outputs) and len(set(outputs)) == 180
    assert produced == sorted(produced)
    # Slots rendered plus slots skipped (if this machine was too busy) follow the clock.
    assert abs(stats.frames_rendered + stats.slots_skipped - elapsed_slots) <= 2
    assert outputs[-1] >= 179


async def test_a_failing_renderer_ends_the_stream_with_an_error() -> None:
    def produce(slot: int) -> int:
        raise RuntimeError("render failed")

    pipeline = SenderPipeline(produce, fps=60, encoder=None)
    try:
        with pytest.raises(MediaStreamError, match="stopped on an error"):
            async with asyncio.timeout(5):
                await pipeline.next_output()
    finally:
        pipeline.stop()


async def test_a_track_that_was_never_started_says_so() -> None:
    track = GameVideoTrack(640, 360, 60)
    with pytest.raises(MediaStreamError, match="never started"):
        await track.recv()
    track.stop()
