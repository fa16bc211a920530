"""Judging one bot session: what it observed, against the limits a container must meet.

Pure: the observation is whatever client played the session (verifier/bot_session.py); the
verdict's findings are fps against the rate asked, freezes, glass-to-glass and
input-to-photon p95 against bounds, unreadable frames, and the game's reaction to each input
(verifier/reaction.py); its metrics are the figures judge/scores.py rates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from contracts.input_events import InputEvent
from contracts.marker import FrameMarker
from contracts.verdict import Check, Finding, Verdict
from verifier.reaction import Reaction, SampledFrame, judge_reactions


@dataclass(frozen=True, slots=True)
class BotLimits:
    """What a container must meet in a bot session; the defaults suit a verifier near it."""

    min_fps_share: float = 0.9  # of the frame rate the session asked for
    max_freezes: int = 0
    g2g_p95_ms: float = 50.0
    i2p_p95_ms: float = 80.0
    max_unreadable_share: float = 0.02  # of the frames decoded
    min_reaction_share: float = 0.9  # of the inputs whose reaction shows in the picture


@dataclass(frozen=True)
class BotObservation:
    """What one bot session saw, whichever client played it: everything judging needs."""

    container_id: str
    width: int
    height: int
    fps_asked: int
    figures: Mapping[str, float]  # verifier.frame_stats.series_summary of the played part
    frames: int  # decoded while the trace played, readable or not
    unreadable: int
    markers: tuple[FrameMarker, ...]  # every readable marker, in arrival order
    samples: tuple[SampledFrame, ...]  # the frames ReactionSampler kept
    events: Mapping[int, InputEvent]  # what the bot sent, by seq


_FIGURES = ("fps", "interval_std_ms", "freezes", "g2g_p50_ms", "g2g_p95_ms", "i2p_p50_ms",
            "i2p_p95_ms")  # fmt: skip


def judge_session(
    observed: BotObservation, limits: BotLimits, *, verifier_id: str, at: float
) -> Verdict:
    """The verdict on one bot session; `at` is the Unix time the session ended."""
    figures = observed.figures
    reactions = judge_reactions(
        observed.markers, observed.samples, observed.events,
        width=observed.width, height=observed.height,
    )  # fmt: skip
    checked = [r for r in reactions if r.checked]
    missed = [r for r in checked if not r.seen]
    reacted = len(checked) - len(missed)
    fps, least_fps = figures["fps"], observed.fps_asked * limits.min_fps_share
    freezes = int(figures["freezes"])
    unreadable = observed.unreadable
    most_unreadable = int(observed.frames * limits.max_unreadable_share)
    findings = (
        Finding("fps", fps >= least_fps, observed.fps_asked, fps,
                f"{fps:.1f} fps served to a session that asked for {observed.fps_asked} "
                f"(at least {least_fps:.1f} required)"),
        Finding("freezes", freezes <= limits.max_freezes, limits.max_freezes, freezes,
                f"{freezes} freezes (an interval of 3x the recent mean and 150 ms more); "
                f"at most {limits.max_freezes} allowed"),
        _bounded("g2g_p95_ms", figures["g2g_p95_ms"], limits.g2g_p95_ms, "glass-to-glass",
                 "no readable frame arrived"),
        _bounded("i2p_p95_ms", figures["i2p_p95_ms"], limits.i2p_p95_ms, "input-to-photon",
                 "no frame showed any input applied"),
        Finding("decode_errors", unreadable <= most_unreadable, most_unreadable, unreadable,
                f"{unreadable} of {observed.frames} decoded frames had an unreadable marker "
                f"(a damaged picture); at most {most_unreadable} allowed"),
        Finding("input_reaction",
                bool(checked) and reacted >= limits.min_reaction_share * len(checked),
                len(checked), reacted, _reaction_detail(len(checked), missed)),
    )  # fmt: skip
    metrics = {key: float(figures[key]) for key in _FIGURES} | {
        "decode_errors": float(unreadable),
        "reactions_expected": float(len(checked)),
        "reactions_seen": float(reacted),
    }
    return Verdict(
        observed.container_id, verifier_id, Check.BOT, at, findings, MappingProxyType(metrics)
    )


def _bounded(name: str, value: float, bound: float, what: str, when_missing: str) -> Finding:
    if math.isnan(value):
        return Finding(name, False, bound, None, f"{when_missing}: {what} cannot be measured")
    return Finding(
        name, value <= bound, bound, value, f"{what} p95 {value:.1f} ms (at most {bound:g} ms)"
    )


def _reaction_detail(checked: int, missed: list[Reaction]) -> str:
    if not checked:
        return "no input of the trace could be checked: the session ended too early"
    if not missed:
        return f"all {checked} checked inputs showed their reaction"
    return f"{len(missed)} of {checked} inputs showed no reaction; first: {missed[0].detail}"
