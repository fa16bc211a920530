"""Verifier rotation: who is on duty each epoch, and which of them judge one check.

Anyone can recompute every draw from public data: the genesis seed (and any beacons), the
registrations and stakes, and the draws before (they set each verifier's staleness). All
arithmetic is exact (integers and fractions, SHA-256), so two implementations agree to the
last bit; floats would let them disagree on a draw that lands on a boundary.

Seeds. Epoch 0's seed is H("genesis", genesis); epoch e's is H("epoch", seed(e-1), e, beacon_e),
where H is SHA-256 over a domain tag and length-prefixed parts (`_digest`). A pure hash chain
(empty beacons) is reproducible but foreseeable: whoever knows the genesis knows every future
draw. A network that must not let verifiers plan ahead mixes in a beacon published only when
the epoch starts (a randomness-beacon round, the hash of the previous epoch's decisions).

Weights. In epoch e, a verifier with stake s (an integer, in the stake's smallest unit) that
was last on duty in epoch l (or registered while the roster was about to draw l + 1) has
    gap = e - l >= 1,   w = s * min(gap, staleness_cap).
So the chance grows with stake and with every epoch sat out, up to `staleness_cap` times.

On-duty probabilities: with k = duty_size and W = the sum of weights, a verifier is on duty
with probability pi = k * w / W, capped at 1: the capped verifiers are always on duty, and
the rest share the k that remain in proportion to their weights (repeat until none exceeds
1). Every pi <= 1 and they sum to exactly k (all are 1 when k >= the roster). This is
`inclusion_probabilities`, and it is exact because the draw is systematic sampling with
probability proportional to size: verifiers are put in the order of H("order", seed, id),
each spans an interval of length pi on [0, k), and the ones whose interval holds one of the
points u, u + 1, ..., u + k - 1 are on duty, with u = H("offset", seed) read as a fraction
of 2^64. An interval of length pi holds a point for a fraction pi of the values of u, in any
order, so the marginals are exact (to the 2^-64 grain of u) and exactly k serve.

Committees. A check of container c with id x is judged by the first `committee_size` (2N+1)
on-duty verifiers in the order of H("committee", seed, c, x, id): uniform among those on
duty, and a verifier cannot steer itself onto a container it wants to judge.

Pure: no clock, no I/O; `epoch_at` turns a time the caller read into an epoch number.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from judge.errors import JudgeError

DOMAIN = b"gamecast-rotation-v1"
DEFAULT_EPOCH_SECONDS = 900.0


class RotationError(JudgeError, ValueError):
    """A roster or rotation request that cannot be honoured; the message says what to change."""


@dataclass(frozen=True, slots=True)
class RotationConfig:
    duty_size: int = 5  # verifiers on duty per epoch (k)
    committee_size: int = 3  # verifiers per check (2N+1)
    staleness_cap: int = 4  # a verifier's weight grows up to this many times its stake
    epoch_seconds: float = DEFAULT_EPOCH_SECONDS  # for `epoch_at`

    def __post_init__(self) -> None:
        if self.committee_size < 1 or self.committee_size % 2 == 0:
            raise RotationError(
                f"a committee needs an odd number of verifiers (2N+1) so that a majority "
                f"always exists, not {self.committee_size}"
            )
        if self.duty_size < self.committee_size:
            raise RotationError(
                f"the on-duty set ({self.duty_size}) must hold a whole committee "
                f"({self.committee_size})"
            )
        if self.staleness_cap < 1:
            raise RotationError(f"the staleness cap is at least 1, not {self.staleness_cap}")
        if not self.epoch_seconds > 0:
            raise RotationError(f"an epoch lasts a positive time, not {self.epoch_seconds:g} s")


def _digest(*parts: bytes) -> bytes:
    """SHA-256 of the domain tag and each part prefixed by its 4-byte length: unambiguous, so
    ("ab", "c") and ("a", "bc") never hash alike."""
    hasher = hashlib.sha256(DOMAIN)
    for part in parts:
        hasher.update(len(part).to_bytes(4, "big"))
        hasher.update(part)
    return hasher.digest()


def _unit(digest: bytes) -> Fraction:
    """The first 8 bytes of a digest as an exact fraction in [0, 1)."""
    return Fraction(int.from_bytes(digest[:8], "big"), 1 << 64)


def genesis_seed(genesis: bytes) -> bytes:
    """Epoch 0's seed."""
    return _digest(b"genesis", genesis)


def next_seed(previous: bytes, epoch: int, beacon: bytes = b"") -> bytes:
    """Epoch `epoch`'s seed from epoch `epoch - 1`'s and the beacon published for it."""
    if epoch < 1:
        raise RotationError(f"epoch 0's seed comes from the genesis; {epoch} has no predecessor")
    return _digest(b"epoch", previous, epoch.to_bytes(8, "big"), beacon)


def epoch_seed(genesis: bytes, epoch: int, beacons: Mapping[int, bytes] | None = None) -> bytes:
    """Any epoch's seed recomputed from the genesis (and the beacons, by epoch; missing: b"")."""
    if epoch < 0:
        raise RotationError(f"epochs count from 0, not {epoch}")
    beacons = beacons or {}
    seed = genesis_seed(genesis)
    for number in range(1, epoch + 1):
        seed = next_seed(seed, number, beacons.get(number, b""))
    return seed


def epoch_at(now: float, genesis_at: float, epoch_seconds: float = DEFAULT_EPOCH_SECONDS) -> int:
    """The epoch running at Unix time `now` for a rotation that started at `genesis_at`."""
    if not epoch_seconds > 0:
        raise RotationError(f"an epoch lasts a positive time, not {epoch_seconds:g} s")
    if now < genesis_at:
        raise RotationError(f"{now:g} is before the rotation's genesis at {genesis_at:g}")
    return math.floor((now - genesis_at) / epoch_seconds)


def inclusion_probabilities(weights: Mapping[str, int], duty_size: int) -> dict[str, Fraction]:
    """Each verifier's exact chance to be on duty: k * w / W, capped at 1 (module docstring)."""
    if any(weight <= 0 for weight in weights.values()):
        raise RotationError("every weight must be positive: a verifier without stake is no one")
    if duty_size >= len(weights):
        return dict.fromkeys(weights, Fraction(1))
    chances: dict[str, Fraction] = {}
    rest, places = dict(weights), duty_size
    while True:
        total = sum(rest.values())
        capped = [verifier for verifier, weight in rest.items() if places * weight >= total]
        if not capped:
            break
        for verifier in capped:
            chances[verifier] = Fraction(1)
            del rest[verifier]
        places -= len(capped)
    chances.update({verifier: Fraction(places * w, total) for verifier, w in rest.items()})
    return chances


def systematic_draw(chances: Mapping[str, Fraction], seed: bytes) -> tuple[str, ...]:
    """The verifiers whose interval holds a point u + m (module docstring), sorted by id."""
    order = sorted(
        chances, key=lambda verifier: (_digest(b"order", seed, verifier.encode()), verifier)
    )
    offset = _unit(_digest(b"offset", seed))
    chosen, low = [], Fraction(0)
    for verifier in order:
        high = low + chances[verifier]
        if math.ceil(low - offset) + offset < high:
            chosen.append(verifier)
        low = high
    return tuple(sorted(chosen))


@dataclass(frozen=True, slots=True)
class Verifier:
    verifier_id: str
    stake: int
    last_on_duty: int  # the last epoch it served; on registering, the epoch before the next draw


@dataclass(frozen=True, slots=True)
class Duty:
    """One epoch's draw: who is on duty, and the seed their committees derive from."""

    epoch: int
    seed: bytes
    on_duty: tuple[str, ...]  # sorted by id
    committee_size: int

    def committee(self, container_id: str, check_id: str) -> tuple[str, ...]:
        """The 2N+1 verifiers that judge check `check_id` of `container_id`, in draw order."""
        ranked = sorted(
            self.on_duty,
            key=lambda verifier: _digest(
                b"committee", self.seed, container_id.encode(), check_id.encode(), verifier.encode()
            ),
        )
        return tuple(ranked[: self.committee_size])


class Roster:
    """The registered verifiers, their stakes and when each last served; draws epoch by epoch.

    `next_epoch` is the epoch the next `draw` is for. Registrations, stake changes and
    removals apply from that draw on, so the roster a draw uses is the one published before
    its seed.
    """

    def __init__(self, config: RotationConfig, next_epoch: int = 0) -> None:
        self.config = config
        self.next_epoch = next_epoch
        self._verifiers: dict[str, Verifier] = {}

    def __contains__(self, verifier_id: object) -> bool:
        return verifier_id in self._verifiers

    @property
    def verifiers(self) -> tuple[Verifier, ...]:
        return tuple(self._verifiers[verifier] for verifier in sorted(self._verifiers))

    def register(self, verifier_id: str, stake: int) -> None:
        if verifier_id in self._verifiers:
            raise RotationError(f"verifier {verifier_id!r} is registered already; set its stake")
        self._check_stake(verifier_id, stake)
        self._verifiers[verifier_id] = Verifier(verifier_id, stake, self.next_epoch - 1)

    def set_stake(self, verifier_id: str, stake: int) -> None:
        self._check_stake(verifier_id, stake)
        verifier = self._get(verifier_id)
        self._verifiers[verifier_id] = Verifier(verifier_id, stake, verifier.last_on_duty)

    def remove(self, verifier_id: str) -> None:
        self._get(verifier_id)
        del self._verifiers[verifier_id]

    def weights(self) -> dict[str, int]:
        """Each verifier's weight in the next draw: stake x min(gap, staleness cap)."""
        cap = self.config.staleness_cap
        return {
            verifier.verifier_id: verifier.stake * min(self.next_epoch - verifier.last_on_duty, cap)
            for verifier in self._verifiers.values()
        }

    def probabilities(self) -> dict[str, Fraction]:
        """Each verifier's exact chance to be on duty in the next draw."""
        return inclusion_probabilities(self.weights(), self.config.duty_size)

    def draw(self, seed: bytes) -> Duty:
        """Draw `next_epoch`'s on-duty set with that epoch's seed, record it, move on."""
        size = self.config.committee_size
        if len(self._verifiers) < size:
            raise RotationError(
                f"committees of {size} need at least {size} registered verifiers; "
                f"{len(self._verifiers)} are"
            )
        on_duty = systematic_draw(self.probabilities(), seed)
        epoch = self.next_epoch
        for verifier_id in on_duty:
            verifier = self._verifiers[verifier_id]
            self._verifiers[verifier_id] = Verifier(verifier_id, verifier.stake, epoch)
        self.next_epoch = epoch + 1
        return Duty(epoch, seed, on_duty, size)

    def _get(self, verifier_id: str) -> Verifier:
        try:
            return self._verifiers[verifier_id]
        except KeyError:
            raise RotationError(f"verifier {verifier_id!r} is not registered") from None

    @staticmethod
    def _check_stake(verifier_id: str, stake: int) -> None:
        if isinstance(stake, bool) or not isinstance(stake, int) or stake <= 0:
            raise RotationError(
                f"verifier {verifier_id!r}: a stake is a positive whole number of the "
                f"stake's smallest unit, not {stake!r}"
            )
