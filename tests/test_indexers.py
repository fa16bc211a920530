"""Three `gamecast indexer` processes share one network through a real redis-server.

Containers and players are real signaling clients on loopback, each connected to an indexer
picked at random: a player is matched to containers connected to other indexers (its offer and
the container's answer cross the Redis bus), no seat is ever given twice, and when an indexer
process is killed its clients fail over to the others and keep playing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import redis

from contracts import protocol as p
from contracts.signing import HostCredentials
from node.runtime import RunningServer
from tests.conftest import eventually
from tests.samples import challenge_of, host_credentials, signed

SEATS_PER_CONTAINER = 2
CAPACITY = [p.StreamCapacity(1280, 720, 60, SEATS_PER_CONTAINER)]
PLAY = p.Play("reference", 1280, 720, 60)


@dataclass
class Indexer:
    process: subprocess.Popen[str]
    url: str

    @property
    def server(self) -> RunningServer:
        return RunningServer(self.url)


@contextlib.contextmanager
def indexers(count: int, redis_url: str, keys: Path) -> Iterator[list[Indexer]]:
    """`count` indexer processes on ephemeral ports, killed (and reaped) on the way out."""
    started: list[Indexer] = []
    try:
        for n in range(count):
            process = subprocess.Popen(
                [sys.executable, "-m", "gamecast", "indexer", "--port", "0", "--redis", redis_url,
                 "--host-keys", str(keys), "--indexer-id", f"i{n}", "--heartbeat-period", "0.5",
                 "--missed-heartbeats", "6"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )  # fmt: skip
            assert process.stdout is not None
            banner = process.stdout.readline()
            match = re.search(r"listening on (http://\S+)/", banner)
            assert match, f"indexer {n} did not start: {banner!r}"
            started.append(Indexer(process, match[1]))
        yield started
    finally:
        for indexer in started:
            indexer.process.kill()
            indexer.process.wait(10)
            assert indexer.process.stdout is not None
            indexer.process.stdout.close()


@dataclass
class Container:
    """A container's signaling side: registers, heartbeats, answers offers; fails over."""

    container_id: str
    key: HostCredentials
    urls: list[str]
    offers: list[str] = field(default_factory=list)
    connected_to: str = ""

    async def run(self, http: aiohttp.ClientSession, registered: asyncio.Event) -> None:
        order = random.sample(self.urls, len(self.urls))
        while True:
            for url in order:
                with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                    await self._serve(http, url, registered)
            order = random.sample(self.urls, len(self.urls))
            await asyncio.sleep(0.1)

    async def _serve(
        self, http: aiohttp.ClientSession, url: str, registered: asyncio.Event
    ) -> None:
        async with http.ws_connect(RunningServer(url).container_url) as ws:
            register = p.Register(
                self.container_id, ["reference"], ["x264"], 1280, 720, 60, capacity=CAPACITY
            )
            await ws.send_str(signed(register, self.key, await challenge_of(ws)))
            assert (await ws.receive_json())["type"] == "registered"
            self.connected_to = url
            registered.set()
            async with asyncio.TaskGroup() as tasks:
                beat = tasks.create_task(self._beat(ws))
                async for frame in ws:
                    message = p.parse_message(frame.data, "server")
                    if isinstance(message, p.SessionOffer):
                        self.offers.append(message.session)
                        await ws.send_str(p.Answer(message.session, "answer-sdp").to_json())
                beat.cancel()

    @staticmethod
    async def _beat(ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await ws.send_str(p.Heartbeat().to_json())
            await asyncio.sleep(0.25)


async def play(
    http: aiohttp.ClientSession, urls: list[str], order: list[str] | None = None
) -> tuple[aiohttp.ClientWebSocketResponse, dict]:
    """Connect to indexers in `order` (in random order if not given) until one answers, ask
    to play; the socket and the first reply (matched or queued)."""
    for url in random.sample(urls, len(urls)) if order is None else order:
        try:
            ws = await http.ws_connect(RunningServer(url).player_url)
        except aiohttp.ClientError:
            continue  # that indexer is down: the next one
        await ws.send_str(PLAY.to_json())
        return ws, await ws.receive_json()
    raise AssertionError("no indexer answered")


def seats_in_redis(url: str) -> dict[str, list[str]]:
    """Every container's seated sessions, read straight from the store."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        return {
            key.split(":", 2)[2]: list(client.hgetall(key))
            for key in client.scan_iter("gamecast:seats:*")
        }


def seated(seats: dict[str, list[str]]) -> set[str]:
    return {session for sessions in seats.values() for session in sessions}


@pytest.fixture
async def network(
    redis_url: str, tmp_path: Path, http
) -> AsyncIterator[tuple[list[Indexer], list[Container]]]:
    keys = tmp_path / "host-keys.json"
    with indexers(3, redis_url, keys) as running:
        urls = [i.url for i in running]
        key = host_credentials(RunningServer(urls[0], keys), "rig")
        containers = [Container(f"c{n}", key, urls) for n in range(8)]
        async with asyncio.TaskGroup() as tasks:
            registered = []
            for container in containers:
                event = asyncio.Event()
                registered.append(event)
                tasks.create_task(container.run(http, event))
            async with asyncio.timeout(20):
                for event in registered:
                    await event.wait()
            try:
                yield running, containers
            finally:
                for task in tasks._tasks:
                    task.cancel()


async def test_three_indexers_never_give_a_seat_twice_and_relay_across_each_other(
    network, http, redis_url
) -> None:
    running, containers = network
    urls = [i.url for i in running]
    seats = len(containers) * SEATS_PER_CONTAINER
    replies = await asyncio.gather(*(play(http, urls) for _ in range(seats + 10)))
    kinds = Counter(reply["type"] for _, reply in replies)
    assert kinds == {"matched": seats, "queued": 10}  # every seat taken once, the rest wait
    per_container = Counter(
        reply["container"] for _, reply in replies if reply["type"] == "matched"
    )
    assert set(per_container.values()) == {SEATS_PER_CONTAINER}
    in_store = seats_in_redis(redis_url)
    assert sorted(len(s) for s in in_store.values()) == [SEATS_PER_CONTAINER] * len(containers)
    assert len({s for sessions in in_store.values() for s in sessions}) == seats

    # Offers and answers cross indexers: every matched player negotiates, wherever its
    # container is connected.
    crossed = 0
    for ws, reply in replies:
        if reply["type"] != "matched":
            continue
        await ws.send_str(p.Offer("offer-sdp").to_json())
        answer = await asyncio.wait_for(ws.receive_json(), 10)
        assert (answer["type"], answer["session"]) == ("session_answer", reply["session"])
        owner = next(c for c in containers if c.container_id == reply["container"])
        crossed += not reply["session"].startswith(f"i{urls.index(owner.connected_to)}.")
    assert crossed > 0  # with 3 indexers, most pairs are on different ones
    for ws, _ in replies:
        await ws.close()


async def test_when_an_indexer_is_killed_its_players_and_containers_fail_over(
    network, http, redis_url
) -> None:
    running, containers = network
    urls = [i.url for i in running]
    held = Counter(c.connected_to for c in containers)
    victim = max(running, key=lambda i: held[i.url])  # so that some containers must move
    moved = [c for c in containers if c.connected_to == victim.url]
    assert moved
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(10)

    # Its containers register with the others; nothing is lost but the dead indexer.
    await eventually(lambda: all(c.connected_to != victim.url for c in moved), seconds=15)
    survivor = next(i for i in running if i is not victim)
    async with http.get(survivor.url + "/api/containers") as response:
        rows = (await response.json())["containers"]
    assert sorted(r["container"] for r in rows) == sorted(c.container_id for c in containers)
    assert {r["state"] for r in rows} == {"connected and healthy"}

    # Players keep the published list: they try the dead indexer first, skip it, and are
    # matched by the others, each on a seat of its own.
    before = seated(seats_in_redis(redis_url))
    order = [victim.url, *(url for url in urls if url != victim.url)]
    replies = await asyncio.gather(*(play(http, urls, order) for _ in range(6)))
    assert [reply["type"] for _, reply in replies] == ["matched"] * len(replies)
    in_store = seats_in_redis(redis_url)
    after = seated(in_store)
    assert len(after) == len(before) + len(replies)
    assert after - before == {reply["session"] for _, reply in replies}
    assert max(len(s) for s in in_store.values()) <= SEATS_PER_CONTAINER
    for ws, _ in replies:
        await ws.close()
