"""Verifier rotation: seeds, exact on-duty chances, reproducible draws, committees, chi-square."""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from fractions import Fraction

import pytest
from scipy.stats import chisquare

from judge.rotation import (
    Duty,
    Roster,
    RotationConfig,
    RotationError,
    epoch_at,
    epoch_seed,
    genesis_seed,
    inclusion_probabilities,
    next_seed,
    systematic_draw,
)

STAKES = {"v0": 1, "v1": 2, "v2": 3, "v3": 5, "v4": 8, "v5": 13, "v6": 21, "v7": 40}
EPOCHS = 10_000


def roster(config: RotationConfig | None = None, stakes: dict[str, int] = STAKES) -> Roster:
    crew = Roster(config or RotationConfig(duty_size=3, committee_size=3))
    for verifier_id, stake in stakes.items():
        crew.register(verifier_id, stake)
    return crew


def draws(crew: Roster, genesis: bytes, epochs: int) -> list[Duty]:
    seed, duties = genesis_seed(genesis), []
    for epoch in range(epochs):
        if epoch:
            seed = next_seed(seed, epoch)
        duties.append(crew.draw(seed))
    return duties


def h(*parts: bytes) -> bytes:
    """The docstring's H, written again from its words."""
    data = b"gamecast-rotation-v1" + b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    return hashlib.sha256(data).digest()


def test_seeds_follow_the_documented_chain() -> None:
    zero = h(b"genesis", b"net")
    one = h(b"epoch", zero, (1).to_bytes(8, "big"), b"")
    two = h(b"epoch", one, (2).to_bytes(8, "big"), b"beacon-2")
    assert genesis_seed(b"net") == epoch_seed(b"net", 0) == zero
    assert next_seed(zero, 1) == epoch_seed(b"net", 1) == one
    assert epoch_seed(b"net", 2, {2: b"beacon-2"}) == two
    assert epoch_seed(b"net", 2) != two  # the beacon changes the seed
    assert epoch_seed(b"other", 2, {2: b"beacon-2"}) != two


def refused(message: str) -> pytest.RaisesExc[RotationError]:
    """Expect a RotationError whose message is exactly `message`."""
    return pytest.raises(RotationError, match=f"^{re.escape(message)}$")


def test_seed_and_epoch_errors() -> None:
    with refused("epochs count from 0, not -1"):
        epoch_seed(b"net", -1)
    with refused("epoch 0's seed comes from the genesis; 0 has no predecessor"):
        next_seed(b"x", 0)
    with refused("99 is before the rotation's genesis at 100"):
        epoch_at(99.0, 100.0)
    with refused("an epoch lasts a positive time, not 0 s"):
        epoch_at(199.0, 100.0, epoch_seconds=0.0)


def test_epoch_at_counts_whole_epochs_from_genesis() -> None:
    assert epoch_at(100.0, 100.0) == 0
    assert epoch_at(100.0 + 899.9, 100.0) == 0
    assert epoch_at(100.0 + 900.0, 100.0) == 1
    assert epoch_at(100.0 + 3 * 900 + 1, 100.0) == 3
    assert epoch_at(130.0, 100.0, epoch_seconds=10.0) == 3


def test_inclusion_probabilities_exact() -> None:
    assert inclusion_probabilities({"a": 1, "b": 2, "c": 3, "d": 4}, 2) == {
        "a": Fraction(1, 5), "b": Fraction(2, 5), "c": Fraction(3, 5), "d": Fraction(4, 5),
    }  # fmt: skip
    # d alone would be 20/13: capped at 1, the others share the one place left.
    assert inclusion_probabilities({"a": 1, "b": 1, "c": 1, "d": 10}, 2) == {
        "a": Fraction(1, 3), "b": Fraction(1, 3), "c": Fraction(1, 3), "d": Fraction(1),
    }  # fmt: skip
    assert inclusion_probabilities({"a": 1, "b": 1, "c": 2}, 2) == {
        "a": Fraction(1, 2), "b": Fraction(1, 2), "c": Fraction(1),
    }  # fmt: skip
    assert inclusion_probabilities({"a": 1, "b": 9}, 2) == {"a": 1, "b": 1}
    with refused("every weight must be positive: a verifier without stake is no one"):
        inclusion_probabilities({"a": 0, "b": 1}, 1)


def test_stake_and_staleness_raise_the_chance() -> None:
    crew = roster(RotationConfig(duty_size=2, committee_size=1), {"a": 1, "b": 1, "c": 1, "d": 3})
    assert crew.weights() == {"a": 1, "b": 1, "c": 1, "d": 3}
    assert crew.probabilities() == {"a": Fraction(1, 3), "b": Fraction(1, 3),
                                    "c": Fraction(1, 3), "d": Fraction(1)}  # fmt: skip
    duty = crew.draw(genesis_seed(b"net"))
    assert len(duty.on_duty) == 2 and "d" in duty.on_duty
    (served,) = set(duty.on_duty) - {"d"}
    sat_out = sorted({"a", "b", "c"} - {served})
    # Epoch 1: those that sat out count 2 epochs, those that served 1.
    assert crew.weights() == {served: 1, "d": 3, **dict.fromkeys(sat_out, 2)}
    assert crew.probabilities() == {served: Fraction(1, 4), "d": Fraction(3, 4),
                                    **dict.fromkeys(sat_out, Fraction(1, 2))}  # fmt: skip
    seed, growth = duty.seed, set()
    for epoch in range(1, 30):  # weights grow to the staleness cap of 4 x stake, no further
        seed = next_seed(seed, epoch)
        crew.draw(seed)
        growth.update(w // s for w, s in zip(crew.weights().values(), (1, 1, 1, 3), strict=True))
    assert max(growth) == 4
    before = crew.weights()["a"]
    crew.set_stake("a", 5)
    assert crew.weights()["a"] == 5 * before


def test_newcomers_start_without_staleness_and_leavers_leave() -> None:
    crew = roster(RotationConfig(duty_size=1, committee_size=1), {"a": 1, "b": 1})
    for duty in draws(crew, b"net", 6):
        assert len(duty.on_duty) == 1
    crew.register("new", 2)
    assert crew.weights()["new"] == 2  # stake x 1, like one that served last epoch
    crew.remove("a")
    assert sorted(crew.weights()) == ["b", "new"]


def test_roster_errors_name_the_fix() -> None:
    crew = roster(RotationConfig(duty_size=3, committee_size=3), {"a": 1, "b": 1})
    with refused("verifier 'a' is registered already; set its stake"):
        crew.register("a", 2)
    for stake in (0, -1, 1.5, True):
        with refused(
            "verifier 'c': a stake is a positive whole number of the stake's smallest unit, "
            f"not {stake!r}"
        ):
            crew.register("c", stake)
    with refused("verifier 'zz' is not registered"):
        crew.remove("zz")
    with refused("committees of 3 need at least 3 registered verifiers; 2 are"):
        crew.draw(genesis_seed(b"net"))
    with refused(
        "a committee needs an odd number of verifiers (2N+1) so that a majority always "
        "exists, not 2"
    ):
        RotationConfig(committee_size=2)
    with refused("the on-duty set (2) must hold a whole committee (3)"):
        RotationConfig(duty_size=2, committee_size=3)
    with refused("the staleness cap is at least 1, not 0"):
        RotationConfig(staleness_cap=0)
    with refused("an epoch lasts a positive time, not -1 s"):
        RotationConfig(epoch_seconds=-1.0)


def test_draws_are_reproducible_and_seeds_matter() -> None:
    first = draws(roster(), b"net", 200)
    again = draws(roster(), b"net", 200)
    other = draws(roster(), b"other-net", 200)
    assert first == again
    assert [d.on_duty for d in first] != [d.on_duty for d in other]
    assert all(len(d.on_duty) == 3 for d in first + other)  # a fixed size, every epoch


def test_anyone_can_recompute_a_draw_from_the_docstring() -> None:
    """Order by H("order", seed, id), points u + m with u = H("offset", seed) / 2^64."""
    crew, seed = roster(), epoch_seed(b"net", 7)
    chances = crew.probabilities()
    order = sorted(chances, key=lambda v: h(b"order", seed, v.encode()))
    u = Fraction(int.from_bytes(h(b"offset", seed)[:8], "big"), 2**64)
    points = [u + m for m in range(3)]
    edges = [sum((chances[v] for v in order[:i]), Fraction(0)) for i in range(len(order) + 1)]
    expected = sorted(
        v for i, v in enumerate(order) if any(edges[i] <= p < edges[i + 1] for p in points)
    )
    assert crew.draw(seed).on_duty == systematic_draw(chances, seed) == tuple(expected)


def test_committees_are_recomputable_and_spread() -> None:
    config = RotationConfig(duty_size=5, committee_size=3)
    duty = roster(config).draw(epoch_seed(b"net", 0))
    committee = duty.committee("container-1", "check-1")
    assert len(committee) == 3 == len(set(committee)) and set(committee) <= set(duty.on_duty)
    ranked = sorted(duty.on_duty, key=lambda v: h(b"committee", duty.seed, b"container-1",
                                                  b"check-1", v.encode()))  # fmt: skip
    assert committee == tuple(ranked[:3])
    seats = Counter(v for n in range(600) for v in duty.committee("container-1", f"check-{n}"))
    assert set(seats) == set(duty.on_duty)
    assert chisquare(list(seats.values())).pvalue > 0.01  # uniform among those on duty


@pytest.fixture(scope="module")
def simulation() -> tuple[Counter[str], dict[str, float], dict[str, float]]:
    """10,000 epochs: who served, the documented expectation (the sum over epochs of each
    verifier's exact chance given the roster's state), and a stake-only expectation."""
    crew, served = roster(), Counter[str]()
    expected = dict.fromkeys(STAKES, 0.0)
    seed = genesis_seed(b"chi-square")
    for epoch in range(EPOCHS):
        for verifier_id, chance in crew.probabilities().items():
            expected[verifier_id] += float(chance)
        served.update(crew.draw(seed).on_duty)
        seed = next_seed(seed, epoch + 1)
    stake_only = {v: float(c) * EPOCHS for v, c in inclusion_probabilities(STAKES, 3).items()}
    return served, expected, stake_only


def test_selection_frequency_matches_the_formula(simulation) -> None:
    served, expected, _ = simulation
    ids = sorted(STAKES)
    assert sum(served.values()) == 3 * EPOCHS
    assert math.isclose(sum(expected.values()), 3 * EPOCHS)
    for verifier_id in ids:
        seen, due = served[verifier_id], expected[verifier_id]
        assert chisquare([seen, EPOCHS - seen], [due, EPOCHS - due]).pvalue > 0.01, verifier_id
    assert chisquare([served[v] for v in ids], [expected[v] for v in ids]).pvalue > 0.01


def test_the_chi_square_test_can_fail(simulation) -> None:
    """The same counts against a formula without staleness are rejected: the test has power."""
    served, _, stake_only = simulation
    ids = sorted(STAKES)
    assert chisquare([served[v] for v in ids], [stake_only[v] for v in ids]).pvalue < 0.01
