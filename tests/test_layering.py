"""The packages are layers and imports only go down: the README's architecture, enforced.

Every module of every gamecast package is parsed (never imported) and each import of another
gamecast package is held against LAYERS. A pure core additionally never imports asyncio or a
network library, nor its own package's edges, so it can be read and tested without sockets.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each package and the packages it may import, bottom to top (README, "Architecture").
ROLES = frozenset(
    {"contracts", "reference_game", "indexer", "builds", "judge", "signaling", "streamer",
     "verifier"}
)  # fmt: skip
LAYERS: dict[str, frozenset[str]] = {
    "contracts": frozenset(),
    "reference_game": frozenset({"contracts"}),
    "indexer": frozenset({"contracts"}),
    "builds": frozenset({"contracts"}),
    "judge": frozenset({"contracts", "indexer"}),
    "signaling": frozenset({"contracts", "indexer", "builds", "judge"}),
    "streamer": frozenset({"contracts", "reference_game", "builds"}),
    "verifier": frozenset({"contracts", "reference_game", "judge"}),
    "node": ROLES,
    "testbed": frozenset({"contracts", "indexer"}),
    "benchmarks": ROLES | {"node", "testbed"},
    "gamecast": ROLES | {"node", "benchmarks"},
}
OURS = frozenset(LAYERS) | {"tests"}

# Pure cores: decisions from events and `now`. They import no event loop, socket, process or
# network library, and of ours only other pure modules, so each reads and tests without I/O.
PURE_PACKAGES = frozenset({"contracts", "reference_game", "judge"})
PURE_MODULES = frozenset(
    {
        "indexer.build_events", "indexer.coordinates", "indexer.keys", "indexer.lifecycle",
        "indexer.placement", "indexer.play_queue", "indexer.registry", "indexer.selection",
        "indexer.store",
        "builds.manifest", "builds.members",
        "signaling.authentication", "signaling.broker", "signaling.connections",
        "signaling.probing", "signaling.session", "signaling.sweep",
        "streamer.fault_reports", "streamer.feedback", "streamer.impairment",
        "streamer.indexer_link", "streamer.pacing", "streamer.sandbox", "streamer.standby_rules",
        "streamer.xauthority",
        "verifier.bot_verdict", "verifier.frame_stats", "verifier.inspection",
        "verifier.live_sample", "verifier.reaction", "verifier.trace",
    }
)  # fmt: skip
IO_LIBRARIES = frozenset(
    {"asyncio", "aiohttp", "aiortc", "aioice", "redis", "socket", "subprocess", "playwright",
     "av", "uvloop", "sqlite3"}
)  # fmt: skip
# Who may import these besides themselves and the tests: only the command line loads a benchmark
# (`gamecast bench ...`), and only benchmarks use the testbed's fixtures.
IMPORTED_ONLY_BY = {"benchmarks": frozenset({"gamecast.cli"}), "testbed": frozenset({"benchmarks"})}


def modules() -> list[tuple[str, Path]]:
    return sorted(
        (".".join(path.relative_to(ROOT).with_suffix("").parts), path)
        for package in LAYERS
        for path in (ROOT / package).rglob("*.py")
    )


# Every module parsed once, when the tests are collected: CPython 3.11's ast.parse can fail
# with "AST constructor recursion depth mismatch" when a finalizer (an earlier test's socket
# collected late) runs while it builds the tree, which a parse in the middle of the suite met.
TREES = {path: ast.parse(path.read_text(), str(path)) for _, path in modules()}


def imported(module: str, path: Path) -> set[str]:
    """Every module name `path` imports, absolute, including imports inside functions."""
    names: set[str] = set()
    for node in ast.walk(TREES[path]):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_every_package_of_the_project_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - {"tests"} == set(LAYERS)


@pytest.mark.parametrize(
    ("module", "path"), modules(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_imports_only_go_down(module: str, path: Path) -> None:
    package = module.split(".", maxsplit=1)[0]
    wrong = sorted(
        name
        for name in imported(module, path)
        if name.split(".")[0] in OURS
        and name.split(".")[0] != package
        and name.split(".")[0] not in LAYERS[package]
    )
    allowed = sorted(LAYERS[package])
    assert not wrong, f"{module} imports {wrong}: {package} may import only {allowed}"


def is_pure(module: str) -> bool:
    """Listed, or in a pure package, or a package's exception tree (`errors`)."""
    package, _, name = module.partition(".")
    return package in PURE_PACKAGES or module in PURE_MODULES or name == "errors"


def test_every_listed_pure_module_exists() -> None:
    assert {module for module, _ in modules()} >= PURE_MODULES


@pytest.mark.parametrize(
    ("module", "path"),
    [(m, p) for m, p in modules() if is_pure(m)],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_pure_core_imports_no_io_and_no_edge(module: str, path: Path) -> None:
    names = imported(module, path)
    io = sorted(name for name in names if name.split(".", maxsplit=1)[0] in IO_LIBRARIES)
    edges = sorted(
        name
        for name in names
        if name.split(".", maxsplit=1)[0] in LAYERS
        and not any(is_pure(m) for m in (name, name.rsplit(".", 1)[0]))
        and name.count(".") >= 1
    )
    assert not io, f"{module} is a pure core but imports {io}"
    assert not edges, f"{module} is a pure core but imports the edges {edges}"


@pytest.mark.parametrize(
    ("module", "path"), modules(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_nothing_of_the_product_imports_benchmarks_or_the_testbed(module: str, path: Path) -> None:
    package = module.split(".", maxsplit=1)[0]
    for name in imported(module, path):
        top = name.split(".", maxsplit=1)[0]
        if top in IMPORTED_ONLY_BY and package != top:
            allowed = IMPORTED_ONLY_BY[top]
            assert module in allowed or package in allowed, f"{module} imports {name}"
