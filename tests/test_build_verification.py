"""Builds verified where they run: a deployed tree is held to the tree its blob derives, at the
agent's start and before each session. A planted folder is never announced; a file appended or
changed in a deployed build is found (even with its mtime put back), reported, and the build
unpacked again from its blob, or the session refused when that cannot be done."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from builds.tree import make_writable
from builds.upload import upload_build
from contracts import protocol as p
from streamer.agent import AgentConfig, ContainerAgent
from streamer.deploy import BuildFault, DeployedBuild, deploy, deployed_builds, verify_build
from tests.build_archives import GAME, files_under, game_zip, manifest_bytes
from tests.test_deploy import build_server


@pytest.fixture
async def deployed(http, tmp_path: Path) -> DeployedBuild:
    async with build_server(tmp_path / "data") as (url, key):
        uploaded = await upload_build(http, url, key, game_zip(tmp_path / "arcade.zip"))
        return await deploy(http, url, uploaded["sha256"], tmp_path / "deployed")


NAMED = ("arcade", "1.0.0")  # the sample build's name and version (tests/build_archives.py)


def by_build(fault: BuildFault) -> str:
    return fault.sha256


def tamper(build: DeployedBuild) -> None:
    """What a hostile build of another studio did: append to this one, and add a file."""
    make_writable(build.path)
    os.chmod(build.path / "game.py", 0o755)
    with open(build.path / "game.py", "ab") as game:
        game.write(b"import os; os.system('steal')\n")
    (build.path / "planted.py").write_bytes(b"evil")


def test_a_deployed_tree_is_read_only_and_verifies(deployed: DeployedBuild) -> None:
    faults: list[BuildFault] = []
    assert verify_build(deployed, faults.append) is None
    assert faults == []
    modes = {name: stat.S_IMODE(os.lstat(deployed.path / name).st_mode)
             for name in ("", "game.py", "manifest.json")}  # fmt: skip
    assert modes == {"": 0o555, "game.py": 0o555, "manifest.json": 0o444}
    if os.geteuid() != 0:  # root writes whatever the modes say; everyone else is stopped
        with pytest.raises(PermissionError):
            (deployed.path / "planted.py").write_bytes(b"x")


def test_an_appended_file_is_found_reported_and_the_build_unpacked_again(
    deployed: DeployedBuild,
) -> None:
    tamper(deployed)
    faults: list[BuildFault] = []
    assert verify_build(deployed, faults.append) is None  # repaired: the session may run
    assert faults == [
        BuildFault(deployed.sha256, "'game.py' was changed; 'planted.py' was added", True, *NAMED)
    ]
    assert files_under(deployed.path) == ["game.py", "manifest.json"]
    assert (deployed.path / "game.py").read_bytes() == GAME
    assert verify_build(deployed, faults.append) is None and len(faults) == 1


def test_a_change_that_puts_size_and_mtime_back_is_still_found(deployed: DeployedBuild) -> None:
    assert verify_build(deployed) is None  # the clean tree hashed once: its cache is warm
    game = deployed.path / "game.py"
    before = game.stat()
    make_writable(deployed.path)
    os.chmod(game, 0o755)
    game.write_bytes(GAME.replace(b"arcade", b"ARCADE"))  # same size
    os.chmod(game, 0o555)
    os.utime(game, ns=(before.st_atime_ns, before.st_mtime_ns))  # the ctime cannot be set back
    faults: list[BuildFault] = []
    assert verify_build(deployed, faults.append) is None
    assert faults == [BuildFault(deployed.sha256, "'game.py' was changed", True, *NAMED)]
    os.chmod(deployed.path / "manifest.json", 0o755)  # made executable: a mode is content too
    assert verify_build(deployed, faults.append) is None
    assert faults[-1].reason == "'manifest.json' has mode 755, not 444"


def test_a_build_whose_blob_is_gone_is_refused_before_a_session(deployed: DeployedBuild) -> None:
    tamper(deployed)
    os.unlink(deployed.blob)
    faults: list[BuildFault] = []
    refused = verify_build(deployed, faults.append)
    assert refused is not None
    assert refused.startswith("arcade was altered on this host and cannot be deployed again: ")
    assert faults == [
        BuildFault(deployed.sha256, "'game.py' was changed; 'planted.py' was added", False, *NAMED)
    ]


def test_after_a_restart_a_planted_folder_is_not_announced_and_a_tampered_build_is_repaired(
    deployed: DeployedBuild,
) -> None:
    root = deployed.path.parent
    tamper(deployed)
    planted = "ab" * 32
    (root / planted).mkdir()
    (root / planted / "manifest.json").write_bytes(manifest_bytes(name="arcade", version="9"))
    (root / planted / "game.py").write_bytes(b"evil")
    lying = hashlib.sha256(b"another archive").hexdigest()
    (root / lying).mkdir()
    (root / ".blobs" / lying).write_bytes(b"not what its name says")
    faults: list[BuildFault] = []
    assert deployed_builds(root, faults.append) == [deployed]  # tree and all, as deployed
    expected = [
        BuildFault(planted, "not announced: no blob proves it", False, planted=True),
        BuildFault(
            lying,
            f"not announced: its blob {root / '.blobs' / lying} does not hash to {lying}",
            False,
            planted=True,
        ),
        BuildFault(deployed.sha256, "'game.py' was changed; 'planted.py' was added", True, *NAMED),
    ]
    assert sorted(faults, key=by_build) == sorted(expected, key=by_build)  # folders by name
    assert (deployed.path / "game.py").read_bytes() == GAME


class Socket:
    """What `_start_session` sends, recorded."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send_str(self, text: str) -> None:
        self.sent.append(p.parse_message(text, "container"))


async def test_the_agent_verifies_a_build_before_each_session(
    deployed: DeployedBuild, tmp_path: Path
) -> None:
    agent = ContainerAgent(AgentConfig("ws://127.0.0.1:9/ws/container", "c1"))
    agent.builds = {"arcade": deployed}
    tamper(deployed)
    os.unlink(deployed.blob)
    ws = Socket()
    offer = p.SessionOffer("s1", "v=0", 1280, 720, 60, game="arcade")
    await agent._start_session(ws, offer)  # type: ignore[arg-type]
    [end] = ws.sent
    assert isinstance(end, p.End) and end.session == "s1"
    assert end.reason.startswith("arcade was altered on this host and cannot be deployed again")
    assert [fault.redeployed for fault in agent.build_faults] == [False]
    report = agent.reports.take()  # for the indexer, once the agent is registered
    assert report is not None and agent.reports.take() is None
    assert (report.kind, report.build, report.session) == ("hash_refused", "arcade", "s1")
    assert agent.sessions == {}
    assert stat.S_IMODE(os.stat(tmp_path / "deployed").st_mode) & 0o200  # the root stays ours
