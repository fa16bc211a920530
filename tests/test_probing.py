"""Probes before a claim, through the broker: who is asked, what a report does, what is refused."""

from __future__ import annotations

import dataclasses
import itertools
import re

import numpy as np
import pytest

from contracts import protocol as p
from indexer.coordinates import VivaldiConfig
from indexer.lifecycle import LivenessConfig
from indexer.placement import Placement
from indexer.play_queue import PlayQueue, Relaxation
from indexer.registry import ContainerRegistry
from indexer.selection import Request
from indexer.store import MemoryStore
from signaling.broker import Outgoing, SessionBroker
from signaling.probing import PROBE_WAIT, PROBES_PER_TARGET, ProbeRounds

PLAY = p.Play("tetris", 1280, 720, 60, rtt_bound_ms=40, probe=True)


def register(container_id: str, region: str, url: str = "") -> p.Register:
    url = url or f"http://{container_id}.example:9000/probe"
    return p.Register(
        container_id, ["tetris"], ["h264"], 1920, 1080, 60, region=region, probe_url=url
    )


def new_broker() -> tuple[SessionBroker, ContainerRegistry]:
    counter = itertools.count(1)
    registry = ContainerRegistry(
        LivenessConfig(2.0, 3), np.random.default_rng(0), admit_on_register=True
    )
    probes = ProbeRounds(Placement(VivaldiConfig(), np.random.default_rng(1)))
    broker = SessionBroker(
        MemoryStore(registry), PlayQueue(Relaxation()), lambda: f"s{next(counter)}", probes=probes
    )
    return broker, registry


def targets(out: list[Outgoing]) -> list[str]:
    (only,) = out
    assert isinstance(only.message, p.Probe) and only.message.count == PROBES_PER_TARGET
    return [t.container for t in only.message.targets]


async def test_two_rounds_then_the_claim_goes_to_the_nearest_measured_container() -> None:
    broker, _ = new_broker()
    for i in range(8):
        await broker.register(register(f"c{i}", f"region-{i % 2}"), 0.0)
    first = targets(await broker.play("p1", PLAY, 0.0))
    assert len(first) == 6
    # Every container is 50 ms away except c5, 5 ms: where the player really is.
    rtt = {f"c{i}": 50.0 for i in range(8)} | {"c5": 5.0}
    report = p.Probed([p.ProbeSample(c, rtt[c]) for c in first])
    out = await broker.probed("p1", report, 0.5)
    second = targets(out)  # the second round: the containers nearest the first placement
    assert not set(second) & set(first)
    out = await broker.probed("p1", p.Probed([p.ProbeSample(c, rtt[c]) for c in second]), 0.6)
    (matched,) = out
    assert matched.message == p.Matched("s1", "c5")
    session = broker.sessions["s1"]
    assert session.request.player is not None  # claimed with the fitted coordinate
    assert broker.probes is not None
    book = broker.probes.placement.book
    book.add("me")
    book.put("me", session.request.player)
    estimate = book.estimate("me", ["c5", "c0"])
    assert estimate[0] < estimate[1]  # a fresh network's coordinates order, not yet measure


async def test_a_report_about_a_container_not_asked_for_is_refused_and_the_player_may_retry() -> (
    None
):
    broker, _ = new_broker()
    await broker.register(register("c1", "eu"), 0.0)
    assert targets(await broker.play("p1", PLAY, 0.0)) == ["c1"]
    with pytest.raises(p.ProtocolError, match=re.escape("'c9' was not asked for in this round")):
        await broker.probed("p1", p.Probed([p.ProbeSample("c9", 3.0)]), 0.1)
    with pytest.raises(p.ProtocolError, match="reported twice"):
        await broker.probed("p1", p.Probed([p.ProbeSample("c1", 3.0)] * 2), 0.1)
    out = await broker.probed("p1", p.Probed([p.ProbeSample("c1", 3.0)]), 0.2)
    assert [o.message for o in out] == [p.Matched("s1", "c1")]


async def test_a_page_that_never_reports_is_claimed_for_after_the_wait() -> None:
    broker, _ = new_broker()
    await broker.register(register("c1", "eu"), 0.0)
    await broker.play("p1", PLAY, 0.0)
    assert await broker.probes_overdue(PROBE_WAIT - 0.1) == []
    out = await broker.probes_overdue(PROBE_WAIT)
    assert [o.message for o in out] == [p.Matched("s1", "c1")]
    assert broker.sessions["s1"].request.player is None  # unplaced: every bound is met


async def test_without_probe_urls_or_without_probe_the_claim_is_immediate() -> None:
    broker, _ = new_broker()
    await broker.register(register("c1", "eu", url="http://c1/probe"), 0.0)
    out = await broker.play("p1", p.Play("tetris", probe=False), 0.0)
    assert [o.message for o in out] == [p.Matched("s1", "c1")]
    broker2, _ = new_broker()
    await broker2.register(p.Register("c1", ["tetris"], ["h264"], 1920, 1080, 60), 0.0)
    out = await broker2.play("p1", PLAY, 0.0)
    assert [o.message for o in out] == [p.Matched("s1", "c1")]


async def test_a_player_who_leaves_while_probing_is_forgotten() -> None:
    broker, _ = new_broker()
    await broker.register(register("c1", "eu"), 0.0)
    await broker.play("p1", PLAY, 0.0)
    with pytest.raises(p.ProtocolError, match="already has a session"):
        await broker.play("p1", PLAY, 0.0)
    out = await broker.player_gone("p1", 0.1)
    assert [o.message for o in out] == [p.Ended("", "the player disconnected")]
    assert await broker.probes_overdue(PROBE_WAIT) == []
    with pytest.raises(p.ProtocolError, match="no probes were asked"):
        await broker.probed("p1", p.Probed([p.ProbeSample("c1", 3.0)]), 0.2)


async def test_a_container_that_went_away_is_not_a_landmark() -> None:
    broker, _ = new_broker()
    await broker.register(register("c1", "eu"), 0.0)
    await broker.register(register("c2", "us"), 0.0)
    await broker.container_gone("c1", "closed", 0.1)
    assert targets(await broker.play("p1", PLAY, 0.2)) == ["c2"]


def test_probe_messages_are_validated() -> None:
    with pytest.raises(
        p.ProtocolError, match=re.escape("probed.samples[0].rtt_ms=-1.0 is outside")
    ):
        p.parse_message(
            '{"v":1,"type":"probed","samples":[{"container":"c1","rtt_ms":-1}]}', "player"
        )
    with pytest.raises(p.ProtocolError, match="must be a list of at most 8 objects"):
        samples = ",".join('{"container":"c","rtt_ms":1}' for _ in range(9))
        p.parse_message(f'{{"v":1,"type":"probed","samples":[{samples}]}}', "player")
    with pytest.raises(p.ProtocolError, match=re.escape("play.probe must be true or false")):
        p.parse_message('{"v":1,"type":"play","game":"g","probe":1}', "player")
    with pytest.raises(
        p.ProtocolError, match=re.escape("register.probe_url must be an http:// or https:// URL")
    ):
        p.parse_message(
            '{"v":1,"type":"register","container":"c","games":[],"encoders":[],"max_width":640,'
            '"max_height":360,"max_fps":30,"probe_url":"javascript:alert(1)"}',
            "container",
        )


async def test_a_container_keeps_its_coordinate_when_it_registers_with_new_specs() -> None:
    broker, registry = new_broker()
    await broker.register(register("c1", "eu"), 0.0)
    first = targets(await broker.play("p1", PLAY, 0.0))
    await broker.probed("p1", p.Probed([p.ProbeSample(c, 5.0) for c in first]), 0.1)
    assert broker.probes is not None
    placed = broker.probes.placement.placed("c1")
    assert placed is not None  # the player's sample placed it
    await broker.player_gone("p1", 0.2)
    await broker.container_gone("c1", "restarting", 0.3)
    await broker.register(dataclasses.replace(register("c1", "eu"), max_fps=30), 0.4)
    rows = registry.fleet.select(
        Request("tetris", 1280, 720, 30, player=placed, rtt_bound=0.5),
        0.5,
        np.random.default_rng(0),
    )  # a finite bound passes only containers with a coordinate
    assert [c.container_id for c in rows] == ["c1"]
