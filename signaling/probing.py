"""The page's round-trip probes before a claim: who is asked to probe what, and what comes of it.

DESIGN.md step 3, in two rounds (indexer/placement.py says why): a player whose page can probe
(`Play.probe`) is sent landmarks, then the containers nearest where those placed it, and is
claimed for with the coordinate both rounds give. A page that never answers is claimed for
after `PROBE_WAIT` seconds with what it has reported so far: probing may sharpen a match but
never hold one up for long.

Pure: the broker calls in with parsed messages and `now`, and sends what comes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from contracts import protocol as p
from indexer.coordinates import Coordinate
from indexer.placement import Landmark, Placement
from indexer.selection import Request

PROBE_WAIT = 3.0  # seconds a player may take over both rounds
PROBES_PER_TARGET = 3  # the page sends the median of this many


@dataclass(slots=True)
class _Probing:
    request: Request
    since: float
    targets: dict[str, str]  # this round's container -> probe url
    samples: dict[str, float] = field(default_factory=dict)  # container -> seconds, all rounds
    rounds_left: int = 1
    coordinate: Coordinate | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """After a report: either the next round's `probe`, or the `request` to claim now (with
    the player's coordinate when one could be fitted). `moved`: containers whose coordinates
    the samples moved, for the store."""

    probe: p.Probe | None = None
    request: Request | None = None
    moved: dict[str, Coordinate] = field(default_factory=dict)


class ProbeRounds:
    def __init__(self, placement: Placement) -> None:
        self.placement = placement
        self._probing: dict[str, _Probing] = {}

    def __contains__(self, player_id: object) -> bool:
        return player_id in self._probing

    def start(self, player_id: str, request: Request, now: float) -> p.Probe | None:
        """The first round's probe, or None when no container can be probed."""
        landmarks = self.placement.landmarks()
        if not landmarks:
            return None
        self._probing[player_id] = _Probing(request, now, _targets(landmarks))
        return _probe(landmarks)

    def report(self, player_id: str, message: p.Probed) -> Outcome:
        """Learn from one round; raises ProtocolError (the player may send it again) for a
        report that names a container it was not asked about, or one twice."""
        state = self._probing.get(player_id)
        if state is None:
            raise p.ProtocolError("unexpected", "no probes were asked of this player")
        seen: set[str] = set()
        for sample in message.samples:
            if sample.container not in state.targets or sample.container in seen:
                raise p.ProtocolError(
                    "bad_field",
                    f"probed: {sample.container!r} was not asked for in this round, or is "
                    "reported twice",
                )
            seen.add(sample.container)
        state.samples.update({s.container: s.rtt_ms / 1000 for s in message.samples})
        placed = self.placement.place(
            f"player:{player_id}", list(state.samples.items()), learn_from=seen
        )
        for container_id in placed.refused:
            state.samples.pop(container_id, None)
        state.coordinate = placed.coordinate or state.coordinate
        if state.rounds_left and state.coordinate is not None:
            state.rounds_left -= 1
            nearest = self.placement.neighbours(state.coordinate, set(state.samples))
            if nearest:
                state.targets = _targets(nearest)
                return Outcome(probe=_probe(nearest), moved=placed.moved)
        return Outcome(request=self._finish(player_id), moved=placed.moved)

    def overdue(self, now: float) -> list[tuple[str, Request]]:
        """Players who did not finish probing in time, with the request to claim for them."""
        late = [pid for pid, state in self._probing.items() if now - state.since >= PROBE_WAIT]
        return [(player_id, self._finish(player_id)) for player_id in late]

    def drop(self, player_id: str) -> bool:
        return self._probing.pop(player_id, None) is not None

    def _finish(self, player_id: str) -> Request:
        state = self._probing.pop(player_id)
        return replace(state.request, player=state.coordinate)


def _targets(landmarks: list[Landmark]) -> dict[str, str]:
    return {landmark.container_id: landmark.url for landmark in landmarks}


def _probe(landmarks: list[Landmark]) -> p.Probe:
    return p.Probe([p.ProbeTarget(lm.container_id, lm.url) for lm in landmarks], PROBES_PER_TARGET)
