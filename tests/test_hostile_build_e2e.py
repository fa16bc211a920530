"""A hostile build played through a real container: its attacks are contained, the session
beside it plays on, and the container serves the next player.

Everything real: the indexer with its catalog, the studio's upload, an agent that deploys the
builds and runs each session's game in its bubblewrap sandbox, aiortc bots as players. The
attacks themselves are tests/hostile_build/hostile.py's, each asserted one by one against the
bare sandbox in tests/test_sandbox_hostile.py; here they run as a player's session would.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import aiohttp
import psutil
import pytest

from builds.upload import upload_build
from node.runtime import run_agent
from streamer.agent import AgentConfig
from streamer.xdisplay import xvfb_unavailable_reason
from tests.conftest import eventually
from tests.test_builds_e2e import network
from verifier.bot import BotPlayer

HOSTILE = Path(__file__).resolve().parent / "hostile_build"
pytestmark = [
    pytest.mark.skipif(xvfb_unavailable_reason() is not None, reason="no Xvfb"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="no bwrap"),
]
# Each hostile build: its name, and the attack its entry runs (hostile.py ATTACK ARGS).
ATTACKS = {
    "bomb": ["fork_bomb", "4"],  # forks without end for 4 s, then exits
    "killer": ["kill_everyone"],  # kill(-1): every process it may signal
    "ghost": ["daemon", "gamecast-e2e-ghost"],  # a detached sleeper meant to outlive it
}


def hostile_archive(tmp: Path, name: str, attack: list[str]) -> Path:
    manifest = json.loads((HOSTILE / "manifest.json").read_text())
    manifest |= {"name": name, "entry": ["python3", "hostile.py", *attack]}
    path = tmp / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.write(HOSTILE / "hostile.py", "hostile.py")
        zipped.writestr("manifest.json", json.dumps(manifest))
    return path


def ghosts() -> list[psutil.Process]:
    return [
        process
        for process in psutil.process_iter(["cmdline"])
        if "gamecast-e2e-ghost" in (process.info["cmdline"] or [])
    ]


async def played_to_its_end(bot: BotPlayer, http: aiohttp.ClientSession, game: str) -> str:
    """A player's session of `game`, until the game (its attack done) ends it; its id."""
    async with bot.play(http, game=game, marker=False):
        await eventually(lambda: bot.session_state == "ended", seconds=30)
    assert bot.session_id is not None
    return bot.session_id


@pytest.mark.timeout(180)
async def test_hostile_builds_are_contained_and_the_container_serves_the_next_player(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with network(tmp_path) as (server, key):
        for name, attack in ATTACKS.items():
            await upload_build(http, server.url, key, hostile_archive(tmp_path, name, attack))
        config = AgentConfig(
            server.container_url, "c1", encoder="x264", max_width=1280, max_height=720,
            max_fps=60, builds_dir=tmp_path / "container", deploy=tuple(ATTACKS),
        )  # fmt: skip
        async with run_agent(config, sessions=2) as agent:
            assert set(agent.builds) == set(ATTACKS)
            victim = BotPlayer(server.player_url)
            async with victim.play(http):  # the reference game, beside each hostile session
                await victim.wait_frames(30)
                hostile_sessions = set()
                for name in ATTACKS:
                    bot = BotPlayer(server.player_url)
                    hostile_sessions.add(await played_to_its_end(bot, http, name))
                    seen = victim.log.frames
                    await victim.wait_frames(seen + 30)  # the other session plays on
                    assert victim.session_state == "playing", name
            ended = {session for session, _ in agent.game_exits}
            assert hostile_sessions <= ended  # each hostile game ended its session (it ran)
            await eventually(lambda: not agent.sessions, seconds=15)
            assert ghosts() == []  # the detached daemon died with its session

            following = BotPlayer(server.player_url)
            async with following.play(http):  # the container serves the next player
                await following.wait_frames(30)
            assert following.log.summary()["fps"] > 0
