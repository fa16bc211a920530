"""Live-session samples and standby spot checks."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from contracts import protocol as p
from contracts.challenge import check, pick_rows, solve
from contracts.marker import FrameMarker
from contracts.verdict import Check, Finding
from judge.scores import ScoreConfig, quality_factors
from tests.samples import L4_TELEMETRY
from verifier.frame_stats import FrameLog
from verifier.live_sample import (
    LiveSample,
    PlayerStats,
    SampleError,
    bot_summary,
    evaluate_live,
    evaluate_spot,
    sample_of,
    spot_challenge,
)

SLOT_MS = 1000 / 60
# A 60 fps session sampled for 10 s: every odd frame half a millisecond late, 4-5 ms encodes.
FRAMES = tuple(i * SLOT_MS + (0.5 if i % 2 else 0.0) for i in range(600))
ENCODES = tuple(4.0 + (i % 10) / 10 for i in range(600))
PLAYER_METRICS = ("rtt_ms", "g2g_p50_ms", "decode_ms", "jitter_buffer_ms", "bitrate_kbps")
PLAYER = PlayerStats(
    fps=60.0,
    width=1280,
    height=720,
    bitrate_kbps=5_400.0,
    rtt_ms=21.0,
    jitter_buffer_ms=9.0,
    decode_ms=2.5,
    frames_decoded=1_200,
    frames_dropped=3,
    freezes=1,
    g2g_p50_ms=None,
    codec="video/H264",
)


def summaries(
    fps: tuple[float, ...] = (60, 59, 60, 60, 58, 60, 60, 59, 60, 60, 60), freezes: int = 0
) -> tuple[PlayerStats, ...]:
    """The page's summaries, one a second; `freezes` new ones by the last."""
    return tuple(
        dataclasses.replace(
            PLAYER,
            fps=float(rate),
            frames_decoded=PLAYER.frames_decoded + 60 * second,
            frames_dropped=PLAYER.frames_dropped + (second > 5),
            freezes=PLAYER.freezes + (freezes if second == len(fps) - 1 else 0),
            g2g_p50_ms=None if second == 0 else 40.0 + second,
        )
        for second, rate in enumerate(fps)
    )


def sample(**changes: object) -> LiveSample:
    healthy = LiveSample("c1", 60, 10.0, FRAMES, ENCODES, summaries())
    return dataclasses.replace(healthy, **changes)


def test_a_healthy_session_passes_with_every_figure() -> None:
    verdict = evaluate_live(sample(), "v1", 500.0)
    assert (verdict.container_id, verdict.verifier_id, verdict.check) == ("c1", "v1", Check.LIVE)
    assert verdict.findings == (
        Finding("sent_fps", True, 60, 60.0),
        Finding("frame_interval_p95_ms", True, 33.33, 17.17),
        Finding("encode_p95_ms", True, 16.67, 4.9),
        Finding("fps", True, 60, 60.0),
        Finding("freezes", True, 0.33, 0),
    )
    assert dict(verdict.metrics) == {
        "sent_fps": 60.0,
        "interval_std_ms": 0.5,
        "encode_p95_ms": 4.9,
        "fps": 60.0,
        "freezes": 0.0,
        "frames_dropped": 1.0,
        "rtt_ms": 21.0,
        "g2g_p50_ms": 45.5,
        "decode_ms": 2.5,
        "jitter_buffer_ms": 9.0,
        "bitrate_kbps": 5_400.0,
    }


def test_scores_rate_the_live_verdict_by_its_fps_finding_and_metrics() -> None:
    factors = quality_factors(evaluate_live(sample(), "v1", 1.0), ScoreConfig())
    assert factors == {"rate": 1.0, "smoothness": 1.0, "freezes": 1.0}


def test_a_container_that_gives_up_slots_fails_its_own_rate_and_gaps() -> None:
    every_third = tuple(i * 3 * SLOT_MS for i in range(200))  # 20 fps of a 60 fps session
    verdict = evaluate_live(sample(frame_times_ms=every_third), "v1", 1.0)
    assert [(finding.name, finding.detail) for finding in verdict.failures] == [
        ("sent_fps", "the container sent 20 fps of the 60 asked, under 90%"),
        (
            "frame_interval_p95_ms",
            "one frame in 20 comes 50 ms or more after the one before, over 2 slots of 16.7 ms",
        ),
    ]


def test_a_slow_encoder_fails() -> None:
    verdict = evaluate_live(sample(encode_ms=(12.0,) * 90 + (25.0,) * 10), "v1", 1.0)
    assert verdict.reason == "encoding takes 25 ms at p95, longer than a 16.7 ms slot"


def test_a_sample_without_encode_times_says_so_and_judges_the_rest() -> None:
    """aiortc encodes VP8 itself: no encode times reach the pipeline, and that is no fault."""
    verdict = evaluate_live(sample(encode_ms=()), "v1", 1.0)
    assert verdict.passed
    (encode,) = [finding for finding in verdict.findings if finding.name == "encode_p95_ms"]
    assert encode.detail.startswith("not measured: aiortc encodes this stream itself (VP8)")
    assert "encode_p95_ms" not in verdict.metrics


def test_too_few_frame_times_fail_without_judging_them() -> None:
    verdict = evaluate_live(sample(frame_times_ms=FRAMES[:29]), "v1", 1.0)
    assert verdict.failures == (
        Finding(
            "sent_fps",
            False,
            60,
            29,
            "the container reported 29 frame times; a sample needs 30",
        ),
    )
    assert set(verdict.metrics) == {"fps", "freezes", "frames_dropped", *PLAYER_METRICS}


def test_what_the_player_sees_counts() -> None:
    choppy = summaries(fps=(60, 40, 41, 42, 45, 44, 43, 40, 44, 45, 60), freezes=3)
    verdict = evaluate_live(sample(player=choppy), "v1", 1.0)
    assert verdict.reason == (
        "the player decoded 44 fps of the 60 asked, under 80%; "
        "the player saw 3 freezes in 10 s, more than 2 a minute"
    )
    assert (verdict.metrics["fps"], verdict.metrics["freezes"]) == (44.0, 3.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fps": 0}, "a sample has a positive fps and window, not 0 fps over 10.0 s"),
        ({"window_s": 0.0}, "a sample has a positive fps and window, not 60 fps over 0.0 s"),
        (
            {"player": (PLAYER,)},
            "a live sample needs the player's summaries from the start and the end of the "
            "window; it has 1",
        ),
        (
            {"player": (PLAYER, dataclasses.replace(PLAYER, frames_decoded=10))},
            "the player's counters go backwards: its summaries span two sessions",
        ),
    ],
)
def test_a_sample_that_cannot_be_judged_is_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(SampleError, match=f"^{message}$"):
        evaluate_live(sample(**changes), "v1", 1.0)


def test_a_sample_the_indexer_served_is_judged_as_it_came() -> None:
    served = p.SessionSample("i1.s1", "c1", 60, 10.0, list(FRAMES), list(ENCODES),
                             list(summaries()))  # fmt: skip
    assert sample_of(served) == sample()
    assert evaluate_live(sample_of(served), "v1", 2.0).passed


def bot_log(received_ms: dict[int, float], capture_lag_ms: float = 30.0) -> FrameLog:
    """A headless player's frames: frame sequence -> when it was received, captured
    `capture_lag_ms` earlier."""
    log = FrameLog()
    for sequence, at in received_ms.items():
        log.add(FrameMarker.at(sequence, round(at - capture_lag_ms), 0), at)
    return log


def test_a_bot_summarises_its_last_two_seconds_and_counts_from_the_start() -> None:
    start = 1_700_000_000_000.0
    # 5 s at 60 fps, half a second lost after the first second, one marker unreadable.
    log = bot_log({i: start + i * SLOT_MS for i in range(300) if not 60 <= i < 90})
    now = start + 299 * SLOT_MS + 1
    log.add(None, now)
    summary = bot_summary(log, now, width=640, height=360, codec="video/H264")
    assert summary == PlayerStats(
        fps=60.0, width=640, height=360, bitrate_kbps=None, rtt_ms=None,
        jitter_buffer_ms=None, decode_ms=None, frames_decoded=271, frames_dropped=30,
        freezes=1, g2g_p50_ms=30.0, codec="video/H264",
    )  # fmt: skip
    report = p.PlayerStatsReport(summary)  # it fits the protocol's ranges: it parses back
    assert p.parse_message(report.to_json(), "player") == report
    idle = bot_summary(log, now + 5_000, width=640, height=360, codec="video/VP8")
    assert (idle.fps, idle.g2g_p50_ms, idle.frames_decoded) == (0.0, None, 271)


# Spot checks ------------------------------------------------------------------------------------

CPU_HOST = p.HostSpecs("AMD EPYC 7B13", 2, 7_951, [])
L4_HOST = p.HostSpecs(
    "Intel(R) Xeon(R) CPU @ 2.20GHz", 8, 31_360, [dataclasses.replace(L4_TELEMETRY)]
)
IDLE = p.Telemetry(cpu_percent=12.5, ram_used_mib=2_000, gpus=[L4_TELEMETRY])
PASSED = Finding("challenge", True, 2.51, 0.3, "answered in 0.30 s")


def test_a_spot_challenge_is_a_quarter_of_the_registration_work() -> None:
    challenge = spot_challenge(hashlib.sha256(b"spot").digest(), CPU_HOST)
    assert (challenge.size, challenge.rounds, challenge.reveal) == (512, 15, 8)
    assert (challenge.device, challenge.time_bound_s) == ("2-core CPU", 2.51)


def test_an_idle_cpu_container_that_solves_its_spot_challenge_passes() -> None:
    challenge = spot_challenge(hashlib.sha256(b"spot").digest(), CPU_HOST)
    answer = solve(challenge, np)
    asked = pick_rows(challenge, b"drawn after the commitment")
    finding = check(challenge, answer.root, 0.3, asked, answer.reveal(asked))
    telemetry = p.Telemetry(cpu_percent=3.0, ram_used_mib=900, gpus=[])
    verdict = evaluate_spot(
        "c1", "v1", 700.0, claimed=CPU_HOST, telemetry=telemetry, challenge=finding
    )
    assert verdict.passed, verdict.reason
    assert verdict.check is Check.SPOT
    assert [f.name for f in verdict.findings] == [
        "gpus_present",
        "cpu_idle",
        "gpu_idle",
        "challenge",
    ]
    assert dict(verdict.metrics) == {"cpu_percent": 3.0, "challenge_s": 0.3}


def test_an_idle_gpu_container_passes() -> None:
    verdict = evaluate_spot("c1", "v1", 1.0, claimed=L4_HOST, telemetry=IDLE, challenge=PASSED)
    assert verdict.findings[:3] == (
        Finding("gpus_present", True, L4_TELEMETRY.uuid, L4_TELEMETRY.uuid),
        Finding("cpu_idle", True, 50.0, 12.5),
        Finding("gpu_idle", True, 50, 31),
    )
    assert dict(verdict.metrics) == {
        "cpu_percent": 12.5,
        "gpu_util_percent": 31.0,
        "challenge_s": 0.3,
    }


def test_a_standby_container_busy_with_other_work_fails() -> None:
    busy_gpu = dataclasses.replace(L4_TELEMETRY, gpu_util_percent=97)
    busy = p.Telemetry(cpu_percent=88.0, ram_used_mib=2_000, gpus=[busy_gpu])
    verdict = evaluate_spot("c1", "v1", 1.0, claimed=L4_HOST, telemetry=busy, challenge=PASSED)
    assert verdict.reason == (
        "on standby its CPU is 88 % busy: other work on the host takes the capacity it "
        "advertises; on standby a GPU is 97 % busy: other work on the host takes the capacity "
        "it advertises"
    )


def test_a_gpu_nvml_cannot_read_counts_as_idle() -> None:
    unread = p.Telemetry(12.5, 2_000, [dataclasses.replace(L4_TELEMETRY, gpu_util_percent=None)])
    verdict = evaluate_spot("c1", "v1", 1.0, claimed=L4_HOST, telemetry=unread, challenge=PASSED)
    assert verdict.passed
    assert "gpu_util_percent" not in verdict.metrics


def test_a_gpu_swapped_since_registration_fails() -> None:
    swapped = p.Telemetry(12.5, 2_000, [dataclasses.replace(L4_TELEMETRY, uuid="GPU-other")])
    verdict = evaluate_spot("c1", "v1", 1.0, claimed=L4_HOST, telemetry=swapped, challenge=PASSED)
    assert verdict.reason == (
        f"the heartbeat shows GPUs ['GPU-other'], the registration claimed ['{L4_TELEMETRY.uuid}']"
    )


def test_a_failed_spot_challenge_fails_the_check() -> None:
    late = dataclasses.replace(PASSED, passed=False, measured=9.0, detail="answered in 9.00 s")
    verdict = evaluate_spot("c1", "v1", 1.0, claimed=L4_HOST, telemetry=IDLE, challenge=late)
    assert verdict.reason == "answered in 9.00 s"
    assert verdict.metrics["challenge_s"] == 9.0


def test_the_spot_check_takes_only_a_challenge_finding() -> None:
    with pytest.raises(
        SampleError, match=r"^the challenge finding is named 'challenge', not 'fps'$"
    ):
        evaluate_spot(
            "c1", "v1", 1.0, claimed=L4_HOST, telemetry=IDLE, challenge=Finding("fps", True)
        )
