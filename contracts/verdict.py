"""What one verifier concluded about one container after one check: the unit everything votes on.

Inspections (the registration check), standby spot checks, live-session samples and bot
sessions all end in a `Verdict`; consensus (2N+1 verifiers, majority) turns several into a
decision, scores fold decisions into a container's QoS, and penalties move its lifecycle.
A verdict lists every finding it made, passed or not, so the dashboard can show claimed
against measured and a demoted container's operator can read exactly why.

Pure data: times are Unix seconds passed in by whoever made the check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from contracts import protocol


class Check(Enum):
    """Which kind of check produced a verdict."""

    REGISTRATION = "registration"  # claimed specs against measured ones, plus the challenge
    SPOT = "spot"  # a standby container probed at a random time
    LIVE = "live"  # a sample of a live player's session (container stats + player getStats)
    BOT = "bot"  # a headless bot session playing a scripted input trace


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing checked: what the container claimed (or what was expected), what was measured,
    and whether that passes. `detail` is a sentence an operator can act on."""

    name: str  # e.g. "gpu_model", "fps", "g2g_p95_ms", "input_reaction", "challenge"
    passed: bool
    claimed: str | float | None = None
    measured: str | float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "claimed": self.claimed,
            "measured": self.measured,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verifier's conclusion. `passed` is true only when every finding passed.

    `metrics` carries the measured figures a score is computed from (bot sessions: "fps",
    "interval_std_ms", "freezes", "g2g_p50_ms", "g2g_p95_ms", "i2p_p50_ms", "i2p_p95_ms",
    "decode_errors", "reactions_expected", "reactions_seen"; registration: "challenge_s").
    """

    container_id: str
    verifier_id: str
    check: Check
    at: float  # Unix seconds when the check finished
    findings: tuple[Finding, ...]
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def passed(self) -> bool:
        return all(finding.passed for finding in self.findings)

    @property
    def failures(self) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if not finding.passed)

    @property
    def reason(self) -> str:
        """Why it failed, in the container operator's terms; "" when it passed."""
        return "; ".join(finding.detail or finding.name for finding in self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "container": self.container_id,
            "verifier": self.verifier_id,
            "check": self.check.value,
            "at": self.at,
            "passed": self.passed,
            "reason": self.reason,
            "findings": [finding.to_dict() for finding in self.findings],
            "metrics": dict(self.metrics),
        }


def verdict_of(verifier_id: str, message: protocol.VerdictReport, now: float) -> Verdict:
    """A report as the verdict it states; numbers sent as text become numbers again."""
    findings = tuple(
        Finding(f.name, f.passed, _value(f.claimed), _value(f.measured), f.detail)
        for f in message.findings
    )
    metrics = {m.name: m.value for m in message.metrics}
    return Verdict(message.container, verifier_id, Check(message.kind), now, findings, metrics)


def report_of(verdict: Verdict, check_id: str) -> protocol.VerdictReport:
    """The wire form of a verdict (the verifier's side of `verdict_of`)."""
    return protocol.VerdictReport(
        check_id,
        verdict.container_id,
        verdict.check.value,
        [
            protocol.FindingRecord(
                f.name[:32], f.passed, _text(f.claimed), _text(f.measured), f.detail[:512]
            )
            for f in verdict.findings
        ],
        [
            protocol.Metric(name[:32], value)
            for name, value in verdict.metrics.items()
            if math.isfinite(value)
        ],
    )


def _value(text: str) -> str | float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _text(value: str | float | None) -> str:
    return "" if value is None else str(value)[: protocol.MAX_TEXT]
