"""benchmarks/indexer.py at a small size: the report's structure and seats that always fit.

No timing is asserted: the numbers depend on the machine."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from benchmarks.indexer import (
    DECISIONS_TARGET,
    P99_TARGET_MS,
    TICK,
    Outcome,
    ScanFleet,
    booking,
    build_fleet,
    drive,
    main,
    occupancy,
    run,
    select_by_scan,
    synthetic_network,
    warm,
)
from indexer.errors import NoContainerError
from indexer.lifecycle import FULL
from indexer.selection import QUANTUM, Choice

CONTAINERS, REQUESTS = 2_000, 5_000


@pytest.fixture(scope="module")
def report() -> dict[str, object]:
    return run(CONTAINERS, REQUESTS, baseline_requests=100, seed=3, say=lambda _: None)


def test_the_report_has_both_selectors_targets_and_memory(report: dict[str, object]) -> None:
    results = report["results"]
    assert isinstance(results, list)
    assert [row["name"] for row in results] == ["fleet (numpy index)", "scan (plain Python)"]
    fleet_row, scan_row = results
    assert (fleet_row["containers"], fleet_row["decisions"]) == (CONTAINERS, REQUESTS)
    assert scan_row["decisions"] == 100
    for row in results:
        assert row["per_s"] > 0 and row["p50_ms"] > 0
        assert set(row["refusals"]) <= {"standby", "build", "resources", "rtt", "price"}
    assert 0.5 < fleet_row["occupancy"] < 0.95  # the session lengths aim at about 70 %
    per_s, p99 = fleet_row["per_s"], fleet_row["p99_ms"]
    assert report["targets"] == {
        "decisions_per_s": {"target": DECISIONS_TARGET, "value": per_s,
                            "met": per_s >= DECISIONS_TARGET},
        "p99_ms": {"target": P99_TARGET_MS, "value": p99, "met": p99 <= P99_TARGET_MS},
    }  # fmt: skip
    memory = report["memory"]
    assert isinstance(memory, dict) and memory["held_mib"] > 0
    json.dumps(report)  # plain data all through


def test_the_baseline_decides_as_the_fleet_does_on_the_benchmark_network() -> None:
    rng = np.random.default_rng(4)
    network = synthetic_network(1_000, 300, rng)
    fleet = build_fleet(network, 0.0)
    book, release = booking(fleet)
    drive(fleet, network.plays[: network.warmup], book, release, rng=rng)
    scan = ScanFleet.copy_of(fleet, network)
    now = network.warmup * TICK  # requests judged from the same state, nothing booked
    for play in network.plays[network.warmup :]:
        try:
            expected = select_by_scan(scan.states, play.request, now, rng)[0]
        except NoContainerError as refused:
            with pytest.raises(NoContainerError) as caught:
                fleet.select(play.request, now, rng)
            assert caught.value.filter == refused.filter
            continue
        got = fleet.select(play.request, now, rng)[0]
        assert got.score == pytest.approx(expected.score, abs=QUANTUM[play.request.policy])


def test_every_booked_seat_fits_and_loads_add_up() -> None:
    rng = np.random.default_rng(5)
    network = synthetic_network(CONTAINERS, REQUESTS, rng)
    fleet = build_fleet(network, 0.0)
    warm(fleet, network, 0.0, rng)
    book, release = booking(fleet)
    booked: list[Choice] = []
    held: defaultdict[str, float] = defaultdict(float)  # booked minus released, per container

    def book_and_keep(choice: Choice) -> None:
        assert fleet.load(choice.container_id) + choice.share <= FULL
        booked.append(choice)
        held[choice.container_id] += choice.share
        book(choice)

    def release_and_count(choice: Choice) -> None:
        held[choice.container_id] -= choice.share
        release(choice)

    outcome = drive(fleet, network.plays, book_and_keep, release_and_count, rng=rng)
    assert len(outcome.latencies_ns) == len(network.plays)
    assert len(booked) == len(network.plays) - sum(outcome.refusals.values())
    assert min(held.values()) > -1e-9  # nothing released that was not booked
    open_shares = _open_shares(outcome)
    for item in network.profiles:
        load = fleet.load(item.container_id)
        assert load == pytest.approx(held[item.container_id], abs=1e-9)
        assert load == pytest.approx(open_shares[item.container_id], abs=1e-9)
    assert 0.5 < occupancy(fleet, network) < 0.95


def _open_shares(outcome: Outcome) -> defaultdict[str, float]:
    """The shares the sessions still open at the end of a run take, per container."""
    shares: defaultdict[str, float] = defaultdict(float)
    for sessions in outcome.ending.values():
        for choice in sessions:
            shares[choice.container_id] += choice.share
    return shares


def test_the_hook_drives_any_selector_with_its_own_booking() -> None:
    rng = np.random.default_rng(9)
    network = synthetic_network(300, 400, rng)
    fleet = build_fleet(network, 0.0)
    scan = ScanFleet.copy_of(fleet, network)
    seats: dict[str, float] = {}

    def claim(choice: Choice) -> None:
        seats[choice.container_id] = seats.get(choice.container_id, 0.0) + choice.share
        scan.set_load(choice.container_id, seats[choice.container_id])

    def free(choice: Choice) -> None:
        seats[choice.container_id] -= choice.share
        scan.set_load(choice.container_id, max(0.0, seats[choice.container_id]))

    outcome = drive(scan, network.plays, claim, free, rng=rng, timed_from=100)
    assert len(outcome.latencies_ns) == len(network.plays) - 100
    assert all(share <= FULL for share in seats.values())
    open_shares = _open_shares(outcome)  # released as the hook was told: the rest still held
    assert seats == pytest.approx({cid: open_shares[cid] for cid in seats}, abs=1e-9)


def test_main_prints_a_table_targets_and_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "indexer.json"
    args = ["--containers", "500", "--requests", "800", "--baseline-requests", "20",
            "--seed", "2", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "decisions/s" in printed and "p99 ms" in printed
    assert "fleet (numpy index)" in printed and "scan (plain Python)" in printed
    assert "targets (issue 5):" in printed and "speed-up over the scan" in printed
    assert "fleet: 800/800 decisions" in printed  # progress lines while it runs
    written = json.loads(out.read_text())
    assert written["benchmark"] == "indexer" and written["config"]["containers"] == 500
    blob = next(line for line in printed.splitlines() if line.startswith("{"))
    assert json.loads(blob)["results"][0]["decisions"] == 800
    assert not math.isnan(written["speedup"])
