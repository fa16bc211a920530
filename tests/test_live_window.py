"""What a live check samples, as the indexer keeps it: the session's window, the broker's
side of the reports, and the sender's own frame timings."""

from __future__ import annotations

import dataclasses
import threading

from contracts import protocol as p
from signaling.broker import SessionBroker
from signaling.session import LiveWindow
from streamer.pipeline import FrameTimings
from tests.test_broker import PLAY, REGISTER, connecting, new_broker, refused
from tests.test_protocol import STATS


def summary(frames_decoded: int) -> p.PlayerStats:
    return dataclasses.replace(STATS, frames_decoded=frames_decoded)


def test_a_window_keeps_the_latest_summaries_and_timings_and_rounds_timings() -> None:
    window = LiveWindow()
    for second in range(p.MAX_SUMMARIES + 5):
        window.add_player(summary(second), now=100.0 + 2 * second)
    report = p.SessionTimings("s1", [1.004, 17.666, 34.333333], [4.123456])
    for _ in range(p.MAX_TIMINGS // 3 + 1):
        window.add_timings(report)
    sample = window.sample("s1", "c1", 60)
    assert [s.frames_decoded for s in sample.player] == list(range(5, p.MAX_SUMMARIES + 5))
    assert sample.window_s == 2.0 * (p.MAX_SUMMARIES - 1)
    assert len(sample.frame_times_ms) == p.MAX_TIMINGS
    assert sample.frame_times_ms[-3:] == [1.0, 17.67, 34.33]
    assert sample.encode_ms == [4.12] * (p.MAX_TIMINGS // 3 + 1)
    assert (sample.session, sample.container, sample.fps) == ("s1", "c1", 60)


def test_a_window_is_sampleable_once_the_player_reported_twice_over_time() -> None:
    window = LiveWindow()
    window.add_timings(p.SessionTimings("s1", [float(t) for t in range(100)], []))
    assert not window.sampleable  # the container's side alone never makes a sample
    window.add_player(summary(1), now=5.0)
    window.add_player(summary(2), now=5.0)
    assert not window.sampleable and window.window_s == 0.0
    window.add_player(summary(3), now=7.5)
    assert window.sampleable and window.window_s == 2.5


async def playing(broker: SessionBroker) -> SessionBroker:
    await (await connecting(broker)).answer("c1", p.Answer("s1", "answer-sdp"))
    await broker.playing("c1", p.Playing("s1"), 1.0)
    return broker


async def test_the_broker_keeps_what_the_player_and_the_container_report() -> None:
    broker = await playing(new_broker())
    assert broker.sampleable() == {}
    broker.player_stats("p1", p.PlayerStatsReport(summary(60)), 3.0)
    broker.session_timings("c1", p.SessionTimings("s1", [10.0, 26.7], [3.5, 4.0]))
    broker.player_stats("p1", p.PlayerStatsReport(summary(180)), 5.0)
    assert broker.sampleable() == {"c1": ["s1"]}
    assert broker.sample("s1") == p.SessionSample(
        "s1", "c1", 60, 2.0, [10.0, 26.7], [3.5, 4.0], [summary(60), summary(180)]
    )
    assert broker.sample("s9") is None


async def test_reports_outside_a_playing_session_are_refused_or_dropped() -> None:
    broker = await connecting(new_broker())
    with refused("unexpected", "session s1 is connecting, not playing"):
        broker.player_stats("p1", p.PlayerStatsReport(STATS), 1.0)
    with refused("unexpected", "no session: send play first"):
        broker.player_stats("p2", p.PlayerStatsReport(STATS), 1.0)
    await broker.register(dataclasses.replace(REGISTER, container="c2"), 1.0)
    with refused("unexpected", "session 's1' is not this container's"):
        broker.session_timings("c2", p.SessionTimings("s1", [1.0], [1.0]))
    broker.session_timings("c1", p.SessionTimings("s7", [1.0], [1.0]))  # ended: dropped
    await broker.play("p3", PLAY, 1.0)  # on c2
    assert broker.sampleable() == {}
    assert broker.sample("s1") == p.SessionSample("s1", "c1", 60, 0.0, [], [], [])


def test_frame_timings_hand_each_frame_to_the_reader_once() -> None:
    timings = FrameTimings(kept=4)
    assert timings.take() == ([], [])
    encoder = threading.Thread(target=lambda: [timings.encoded(ms) for ms in (3.333, 4.0)])
    encoder.start()
    encoder.join()
    for at in (1000.0, 1016.666, 1033.333):
        timings.sent(at)
    assert timings.take() == ([1000.0, 1016.67, 1033.33], [3.33, 4.0])
    assert timings.take() == ([], [])
    for at in range(6):  # nobody read: the oldest go
        timings.sent(float(at))
    assert timings.take() == ([2.0, 3.0, 4.0, 5.0], [])
