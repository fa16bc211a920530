"""What a receiver's RTCP feedback asks of the encoder: a bitrate, and now and then a keyframe.

aiortc offers no transport-wide congestion control, so the sender combines the two signals it
does get, as GCC does (draft-ietf-rmcat-gcc-02): the receiver's delay-based estimate (REMB)
and a loss-based rate from receiver reports (above 10 % loss cut by half the loss, below 2 %
grow by 5 %, in between hold). The target is the smaller of the two, within the stream's
floor and ceiling. Keyframe requests (PLI/FIR) come in bursts after a loss; each IDR costs
several frames' worth of bits, so they are granted at most once per interval and a request
inside the interval is deferred, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LOSS_HIGH = 0.10
LOSS_LOW = 0.02
GROWTH = 1.05
KEYFRAME_INTERVAL_S = 0.3
TRACE_STEP = 0.01  # REMB can come with every packet: the trace keeps moves of >= 1 % only


@dataclass(frozen=True, slots=True)
class BitrateChange:
    at: float  # the caller's clock, seconds
    bitrate: int
    reason: str  # "remb", "loss", "recovery"


@dataclass
class BitrateController:
    floor: int
    ceiling: int
    target: int = 0
    trace: list[BitrateChange] = field(default_factory=list)
    _estimate: float = 0.0  # latest REMB; 0 until one arrives
    _loss_based: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.ceiling:
            raise ValueError(f"need 0 < floor <= ceiling, got {self.floor}, {self.ceiling}")
        self._loss_based = float(self.ceiling)
        self.target = self.ceiling

    def on_estimate(self, bitrate: int, now: float) -> int:
        """A receiver-estimated maximum bitrate (REMB) arrived."""
        self._estimate = float(bitrate)
        return self._update(now, "remb")

    def on_loss(self, fraction_lost: float, now: float) -> int:
        """A receiver report said this fraction (0-1) of packets since the last one was lost."""
        if fraction_lost > LOSS_HIGH:
            self._loss_based = self.target * (1 - 0.5 * fraction_lost)
            reason = "loss"
        elif fraction_lost < LOSS_LOW:
            self._loss_based = min(self.ceiling, self._loss_based * GROWTH)
            reason = "recovery"
        else:
            return self.target
        return self._update(now, reason)

    def _update(self, now: float, reason: str) -> int:
        wanted = self._loss_based if self._estimate <= 0 else min(self._estimate, self._loss_based)
        target = int(max(self.floor, min(self.ceiling, wanted)))
        traced = self.trace[-1].bitrate if self.trace else self.ceiling
        if abs(target - traced) >= TRACE_STEP * traced:
            self.trace.append(BitrateChange(now, target, reason))
        self.target = target
        return target


@dataclass
class KeyframeGate:
    """Grants at most one keyframe per `interval` seconds; a request made too soon waits."""

    interval: float = KEYFRAME_INTERVAL_S
    requested: int = 0
    granted: int = 0
    _pending: bool = False
    _last_grant: float | None = None

    def request(self) -> None:
        self.requested += 1
        self._pending = True

    def take(self, now: float) -> bool:
        """Whether the frame being encoded at `now` should be a keyframe."""
        if not self._pending:
            return False
        if self._last_grant is not None and now - self._last_grant < self.interval:
            return False
        self._pending = False
        self._last_grant = now
        self.granted += 1
        return True
