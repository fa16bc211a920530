"""The selection oracle: indexer/selection.py's filters and scores written out plainly, one
container at a time. tests/test_selection.py holds the numpy fleet against it, and
`gamecast bench indexer` times it as the baseline."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from contracts.requirements import Requirements
from indexer.coordinates import Coordinate
from indexer.errors import NoContainerError
from indexer.lifecycle import FULL
from indexer.selection import (
    FALLBACK_RTT_SCALE,
    QUALITY_QUANTUM,
    QUANTUM,
    UNPROVEN_QOS,
    Choice,
    Policy,
    Profile,
    Request,
    quality_factor,
    seat_share,
)


@dataclass(slots=True)
class ScanState:
    """One container as the scan sees it: the profile and the state the setters keep."""

    profile: Profile
    coordinate: Coordinate | None = None
    candidate: bool = False
    deadline: float = -math.inf
    load: float = 0.0
    qos: float = UNPROVEN_QOS
    penalty: float = 0.0


def _meets(profile: Profile, needs: Requirements) -> bool:
    return (
        profile.vram_mib >= needs.vram_mib
        and profile.cpu_cores >= needs.cpu_cores
        and profile.ram_mib >= needs.ram_mib
        and profile.uplink_mbps >= needs.uplink_mbps
        and (not needs.encoders or bool(needs.encoders & profile.encoders))
    )


def select_by_scan(
    states: Sequence[ScanState],
    request: Request,
    now: float,
    rng: np.random.Generator,
    shortlist: int = 1,
) -> list[Choice]:
    """indexer/selection.py's filters and scores, written out plainly over every container:
    the reference `Fleet.select` is tested against, and the benchmark's baseline. Refusals
    name the same filter (the messages are shorter); ties are broken in another order."""
    if not states:
        raise NoContainerError("no container is registered", filter="standby")
    player, bound, budget = request.player, request.rtt_bound, request.budget_per_minute
    passed = Counter[str]()
    survivors: list[tuple[ScanState, float, float]] = []
    for state in states:
        if not (state.candidate and state.deadline >= now and state.load < 1.0):
            continue
        passed["standby"] += 1
        profile = state.profile
        if request.build not in profile.builds:
            continue
        passed["build"] += 1
        share = seat_share(profile, request.width, request.height, request.fps)
        if not _meets(profile, request.requirements) or share is None:
            continue
        if state.load + share > FULL:
            continue
        passed["resources"] += 1
        rtt = math.nan
        if player is not None:
            place = state.coordinate
            rtt = math.inf
            if place is not None:
                rtt = math.dist(place.vec, player.vec) + place.height + player.height
            if not rtt <= bound:
                continue
        passed["rtt"] += 1
        if profile.price_per_minute > budget:
            continue
        survivors.append((state, share, rtt))
    if not survivors:
        order = ("standby", "build", "resources", "rtt")
        emptied = next((name for name in order if not passed[name]), "price")
        raise NoContainerError(f"refused by the {emptied} filter", filter=emptied)
    return _rank_by_scan(states, survivors, request, rng, shortlist)


def _rank_by_scan(
    states: Sequence[ScanState],
    survivors: list[tuple[ScanState, float, float]],
    request: Request,
    rng: np.random.Generator,
    shortlist: int,
) -> list[Choice]:
    player, bound, budget = request.player, request.rtt_bound, request.budget_per_minute
    policy = request.policy
    if 0.0 < budget < math.inf:
        cost_scale = budget
    else:
        median = statistics.median(s.profile.price_per_minute for s in states)
        cost_scale = median if median > 0 else 1.0
    known = [rtt for _, _, rtt in survivors if math.isfinite(rtt)]
    rtt_scale = bound
    if not 0.0 < bound < math.inf:
        rtt_scale = statistics.median(known) if known else FALLBACK_RTT_SCALE
    quantum = QUANTUM[policy]
    if player is None and policy is Policy.BEST_EXPERIENCE:
        quantum = QUALITY_QUANTUM
    ranked = []
    for state, share, rtt in survivors:
        price, penalty = state.profile.price_per_minute, state.penalty
        factor = quality_factor(policy, state.qos)
        rtt_term = rtt if math.isfinite(rtt) else rtt_scale  # unknown RTT counts as the scale
        if policy is Policy.LOWEST_COST:
            score = price * factor + penalty * cost_scale
        elif policy is Policy.BEST_EXPERIENCE and player is None:
            score = factor + penalty
        elif policy is Policy.BEST_EXPERIENCE:
            score = rtt_term * 1e3 * factor + penalty * rtt_scale * 1e3
        else:
            score = (price / cost_scale + rtt_term / rtt_scale) * factor + penalty
        cell = math.floor(score / quantum)
        ranked.append((cell, float(rng.random()), state, share, rtt))
    ranked.sort(key=lambda item: (item[0], item[1]))
    return [
        Choice(state.profile.container_id, share, rtt if math.isfinite(rtt) else math.nan,
               cell * quantum)
        for cell, _, state, share, rtt in ranked[:shortlist]
    ]  # fmt: skip
