"""Live-session samples and standby spot checks: how a container does when nobody announced a test.

A live sample covers a window of a real player's session: the container's own frame times
and encode times, and the player page's getStats summaries (web-client/stats.js, sent every
2 s), as the indexer keeps them (contracts/protocol.py SessionSample; `sample_of` reads one).
A headless player reports what its frames show instead (`bot_summary`). Thresholds, for a
session at F fps (a slot is 1000 / F ms):

    sent_fps               container's frame rate >= 90 % of F   (the pacer holds F; less is
                                                                  slots given up, not jitter)
    frame_interval_p95_ms  p95 gap between frames <= 2 slots     (a missed slot now and then
                                                                  passes, routine ones do not)
    encode_p95_ms          p95 encode time <= 1 slot             (an encoder slower than a slot
                                                                  cannot hold F)
    fps                    player's median decoded fps >= 80 % of F  (the path costs some)
    freezes                player's new W3C freezes <= 2 a minute

Trust: the player's figures include its network and come from a page the container does not
control. A failed live verdict is therefore a quality-control flag (judge/scores.py), which
a bot session over a known path settles, and samples are drawn from random sessions, so one
hostile or badly connected player moves only its own.

A spot check probes a standby container at a random time (judge/coordinator.py schedules
them) with the heartbeat telemetry taken just before a small challenge (`spot_challenge`),
since the challenge itself loads the machine:

    gpus_present  the heartbeat's GPUs are the claimed ones (by UUID)
    cpu_idle      CPU <= 50 %           (a standby container busy with other work does not have
    gpu_idle      every GPU <= 50 %      the capacity it advertises; a GPU NVML cannot read passes)
    challenge     within its bound, as at registration: the machine may have changed since

Pure: times are passed in.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from dataclasses import dataclass
from types import MappingProxyType

from contracts import protocol as p
from contracts.challenge import Challenge, device_class, make_challenge
from contracts.protocol import PlayerStats
from contracts.verdict import Check, Finding, Verdict
from verifier.errors import VerifierError
from verifier.frame_stats import FrameLog, frame_rate, percentile

MIN_FRAMES = 30
SENT_FPS_SHARE = 0.9
INTERVAL_P95_SLOTS = 2.0
ENCODE_P95_SLOTS = 1.0
PLAYER_FPS_SHARE = 0.8
FREEZES_PER_MINUTE = 2.0
IDLE_CPU_PERCENT = 50.0
IDLE_GPU_PERCENT = 50
SPOT_TARGET_S = 0.25  # a quarter of the registration's work: spot checks come often
SPOT_REVEAL = 8
STATS_PERIOD_S = 2.0  # how often a player reports its summary, as web-client/play.js does
SUMMARY_WINDOW_MS = STATS_PERIOD_S * 1000  # the frames a headless player's summary covers


class SampleError(VerifierError, ValueError):
    """A sample that cannot be judged (the caller's mistake, not the container's)."""


@dataclass(frozen=True, slots=True)
class LiveSample:
    container_id: str
    fps: int  # what the session asked for
    window_s: float
    frame_times_ms: tuple[float, ...]  # each frame handed to the sender, container's clock
    encode_ms: tuple[float, ...]
    player: tuple[PlayerStats, ...]  # the page's summaries over the window, oldest first


def sample_of(message: p.SessionSample) -> LiveSample:
    """The sample an indexer served for one of `message.container`'s sessions."""
    return LiveSample(
        message.container,
        message.fps,
        message.window_s,
        tuple(message.frame_times_ms),
        tuple(message.encode_ms),
        tuple(message.player),
    )


def bot_summary(
    log: FrameLog, now_ms: float, *, width: int, height: int, codec: str
) -> PlayerStats:
    """What a headless player (verifier/bot.py) reports where a page reports its getStats
    summary: the rate and median glass-to-glass of its last SUMMARY_WINDOW_MS of frames, and
    its counters since the session started (frames missing from the marker sequence count as
    dropped). Figures only a browser's stats know (bitrate, round trip, jitter buffer,
    decode time) are None. `now_ms`: the player's Unix time."""
    first = bisect.bisect_right(
        log.samples, now_ms - SUMMARY_WINDOW_MS, key=lambda sample: sample.received_ms
    )
    recent = FrameLog(log.samples[first:])
    g2g = recent.glass_to_glass_ms()
    return PlayerStats(
        fps=round(recent.fps(), 2),
        width=width,
        height=height,
        bitrate_kbps=None,
        rtt_ms=None,
        jitter_buffer_ms=None,
        decode_ms=None,
        frames_decoded=log.frames + log.unreadable,
        frames_dropped=log.sequence_gaps(),
        freezes=log.freezes(),
        g2g_p50_ms=round(statistics.median(g2g), 1) if g2g else None,
        codec=codec,
    )


def evaluate_live(sample: LiveSample, verifier_id: str, at: float) -> Verdict:
    """The live verdict; its "fps" finding and its metrics are what judge/scores.py rates."""
    if sample.fps < 1 or not sample.window_s > 0:
        raise SampleError(
            f"a sample has a positive fps and window, not {sample.fps} fps over {sample.window_s} s"
        )
    if len(sample.player) < 2:
        raise SampleError(
            "a live sample needs the player's summaries from the start and the end of the "
            f"window; it has {len(sample.player)}"
        )
    first, last = sample.player[0], sample.player[-1]
    freezes = last.freezes - first.freezes
    if freezes < 0 or last.frames_decoded < first.frames_decoded:
        raise SampleError("the player's counters go backwards: its summaries span two sessions")
    player_fps = statistics.median(summary.fps for summary in sample.player)
    allowed = round(FREEZES_PER_MINUTE * sample.window_s / 60, 2)
    container_findings, container_metrics = _container_side(sample)
    findings = [
        *container_findings,
        _at_least("fps", sample.fps, player_fps, PLAYER_FPS_SHARE, "the player decoded"),
        _at_most(
            "freezes",
            allowed,
            freezes,
            f"the player saw {freezes} freezes in {sample.window_s:g} s, more than "
            f"{FREEZES_PER_MINUTE:g} a minute",
        ),
    ]
    metrics = container_metrics | {
        "fps": player_fps,
        "freezes": float(freezes),
        "frames_dropped": float(last.frames_dropped - first.frames_dropped),
    }
    for name in ("rtt_ms", "g2g_p50_ms", "decode_ms", "jitter_buffer_ms", "bitrate_kbps"):
        readings = [
            value for summary in sample.player if (value := getattr(summary, name)) is not None
        ]
        if readings:
            metrics[name] = statistics.median(readings)
    return Verdict(
        sample.container_id, verifier_id, Check.LIVE, at, tuple(findings), MappingProxyType(metrics)
    )


def spot_challenge(seed: bytes, claimed: p.HostSpecs | None) -> Challenge:
    """The small challenge of a spot check, sized from the registration's claims."""
    return make_challenge(seed, device_class(claimed), SPOT_TARGET_S, SPOT_REVEAL)


def evaluate_spot(
    container_id: str,
    verifier_id: str,
    at: float,
    *,
    claimed: p.HostSpecs | None,
    telemetry: p.Telemetry,
    challenge: Finding,
) -> Verdict:
    """The spot verdict from the last heartbeat before the challenge and the challenge's
    finding (`check` of a `spot_challenge`)."""
    if challenge.name != "challenge":
        raise SampleError(f"the challenge finding is named 'challenge', not {challenge.name!r}")
    claimed_gpus = sorted(gpu.uuid for gpu in (claimed.gpus if claimed else ()))
    seen_gpus = sorted(gpu.uuid for gpu in telemetry.gpus)
    readable = [gpu.gpu_util_percent for gpu in telemetry.gpus if gpu.gpu_util_percent is not None]
    busiest = max(readable, default=0)
    cpu = telemetry.cpu_percent
    elsewhere = "other work on the host takes the capacity it advertises"
    findings = (
        _same_gpus(claimed_gpus, seen_gpus),
        _at_most(
            "cpu_idle", IDLE_CPU_PERCENT, cpu, f"on standby its CPU is {cpu:g} % busy: {elsewhere}"
        ),
        _at_most(
            "gpu_idle",
            IDLE_GPU_PERCENT,
            busiest,
            f"on standby a GPU is {busiest} % busy: {elsewhere}",
        ),
        challenge,
    )
    metrics = {"cpu_percent": cpu}
    if readable:
        metrics["gpu_util_percent"] = float(busiest)
    if isinstance(challenge.measured, float):
        metrics["challenge_s"] = challenge.measured
    return Verdict(container_id, verifier_id, Check.SPOT, at, findings, MappingProxyType(metrics))


def _container_side(sample: LiveSample) -> tuple[list[Finding], dict[str, float]]:
    """The findings and metrics of the container's own figures."""
    slot_ms = 1000 / sample.fps
    times = list(sample.frame_times_ms)
    if len(times) < MIN_FRAMES:
        detail = f"the container reported {len(times)} frame times; a sample needs {MIN_FRAMES}"
        return [Finding("sent_fps", False, sample.fps, len(times), detail)], {}
    intervals = [later - earlier for earlier, later in itertools.pairwise(times)]
    sent_fps = round(frame_rate(times), 2)
    gap = round(percentile(intervals, 0.95), 2)
    encode = round(percentile(list(sample.encode_ms), 0.95), 2)  # NaN: aiortc encodes (VP8)
    findings = [
        _at_least("sent_fps", sample.fps, sent_fps, SENT_FPS_SHARE, "the container sent"),
        _at_most(
            "frame_interval_p95_ms",
            round(INTERVAL_P95_SLOTS * slot_ms, 2),
            gap,
            f"one frame in 20 comes {gap:g} ms or more after the one before, over "
            f"{INTERVAL_P95_SLOTS:g} slots of {slot_ms:.1f} ms",
        ),
        _at_most(
            "encode_p95_ms",
            round(ENCODE_P95_SLOTS * slot_ms, 2),
            encode,
            f"encoding takes {encode:g} ms at p95, longer than a {slot_ms:.1f} ms slot",
        )
        if sample.encode_ms
        else Finding(
            "encode_p95_ms",
            True,
            detail="not measured: aiortc encodes this stream itself (VP8), out of the "
            "pipeline's sight; the frame times above still are",
        ),
    ]
    metrics = {"sent_fps": sent_fps, "interval_std_ms": round(statistics.pstdev(intervals), 2)}
    if not math.isnan(encode):
        metrics["encode_p95_ms"] = encode
    return findings, metrics


def _same_gpus(claimed: list[str], seen: list[str]) -> Finding:
    passed = claimed == seen
    detail = f"the heartbeat shows GPUs {seen}, the registration claimed {claimed}"
    return Finding(
        "gpus_present", passed, ",".join(claimed), ",".join(seen), "" if passed else detail
    )


def _at_least(name: str, wanted: int, measured: float, share: float, who: str) -> Finding:
    passed = measured >= share * wanted
    detail = f"{who} {measured:g} fps of the {wanted} asked, under {share:.0%}"
    return Finding(name, passed, wanted, measured, "" if passed else detail)


def _at_most(name: str, limit: float, measured: float, detail: str) -> Finding:
    """Passes at or under `limit` (NaN, a figure missing, fails); `detail` says why it failed."""
    passed = measured <= limit
    return Finding(name, passed, limit, measured, "" if passed else detail)
