"""The one command: `gamecast up | indexer | container | verifier | keys | upload | studio-keys |
bench`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import re
import signal
import socket
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builds import cli as builds_cli
from contracts.protocol import MAX_SESSIONS, Register
from contracts.signing import HostCredentials, KeyFileError, write_private_key
from gamecast import verifier_cli
from indexer.keys import KeyStore, KeyStoreError
from node.runtime import embedded_network, run_agent, serve
from signaling.config import ServerConfig
from streamer.agent import AgentConfig
from streamer.backends import CHOICES as ENCODER_CHOICES
from streamer.capacity import describe as describe_capacity
from streamer.impairment import Impairment, ImpairmentError

log = logging.getLogger("gamecast")

ANY_ADDRESS = "0.0.0.0"  # the probe endpoint listens on every interface


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived command until Ctrl-C or SIGTERM, on uvloop where it installs.

    The one place the four long-lived commands (up, indexer, container, verifier --on-duty)
    stop: either signal cancels the task that owns everything, whose blocks clean up (players
    told why, the container locked under maintenance), and then "stopped" is printed.
    """
    try:
        import uvloop  # noqa: PLC0415  (optional: absent on some platforms)

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    if runner(_until_stopped(main)):
        print("\ngamecast: stopped", file=sys.stderr, flush=True)


async def _until_stopped(main: Coroutine[Any, Any, None]) -> bool:
    """Await `main` in this task; True when a stop signal ended it (cancelled it, that is).

    The first signal cancels this task once; later ones only say it is on its way, since a
    second cancel would cut short the cleanup the first one started.
    """
    loop = asyncio.get_running_loop()
    owner = asyncio.current_task()
    assert owner is not None  # a coroutine the runner awaits runs in a task
    requested: list[signal.Signals] = []

    def stop(signum: signal.Signals) -> None:
        if requested:
            log.warning("%s: already stopping (cleaning up)", signum.name)
            return
        requested.append(signum)
        log.info("%s: stopping", signum.name)
        owner.cancel(f"stopped by {signum.name}")

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    try:
        await main
    except asyncio.CancelledError:
        if not requested or owner.uncancel():  # not ours, or cancelled again since
            raise
        return True
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    return False


DEFAULT_KEY_STORE = Path.home() / ".local/share/gamecast/host-keys.json"

# A container may advertise what the register message accepts, no more: checked here, so a bad
# flag is a usage error now rather than a registration the indexer refuses later.
_REGISTER_LIMITS = {f.name: f.metadata for f in dataclasses.fields(Register)}


def _within(field: str, what: str, value: int) -> int:
    rules = _REGISTER_LIMITS[field]
    low, high = rules["low"], rules["high"]
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what} {value} is outside [{low}, {high}]")
    if rules.get("even") and value % 2:
        raise argparse.ArgumentTypeError(f"{what} {value} must be even (4:2:0 video)")
    return value


def _max_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT in pixels, like 1920x1080; got {text!r}"
        )
    return (
        _within("max_width", "width", int(match[1])),
        _within("max_height", "height", int(match[2])),
    )


def _max_fps(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected whole frames per second, like 60; got {text!r}")
    return _within("max_fps", "frame rate", int(text))


def _capacity(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_SESSIONS:
        raise argparse.ArgumentTypeError(
            f"capacity is a number of sessions, 1 to {MAX_SESSIONS}; got {text!r}"
        )
    return int(text)


def _sizes(text: str) -> list[str]:
    from benchmarks.encode import SIZES as BENCH_SIZES  # noqa: PLC0415  (benchmarks on demand)

    sizes = [size.strip().lower() for size in text.split(",") if size.strip()]
    unknown = [size for size in sizes if size not in BENCH_SIZES]
    if unknown or not sizes:
        raise argparse.ArgumentTypeError(
            f"sizes must be a comma-separated list of {', '.join(BENCH_SIZES)}; got {text!r}"
        )
    return sizes


async def _forever() -> None:
    await asyncio.Event().wait()


async def _up(args: argparse.Namespace) -> None:
    width, height = args.max_size
    network = embedded_network(
        args.host,
        args.port,
        args.encoder,
        args.codec,
        args.playout_delay,
        max_width=width,
        max_height=height,
        max_fps=args.max_fps,
        sessions=args.capacity,
        steady_release=args.steady_release,
        verifiers=args.verifiers,
    )
    async with network as (server, agent):
        print(f"gamecast is up: open {server.url}/  (press Ctrl-C to stop)")
        config = agent.config
        print(
            f"  container {config.container_id}: reference game, {config.encoder}"
            f" ({config.encoder_reason}), {config.codec}, frames on the {config.frames_on.upper()}"
        )
        print(f"  sessions at once: {describe_capacity(config.capacity)}")
        if args.verifiers:
            print(f"  verifiers: {args.verifiers} on duty; the container is offered to players"
                  " once they inspected it (a few seconds)")  # fmt: skip
        print(f"  dashboard: {server.url}/static/dashboard.html")
        print(f"  API: {server.url}/api/containers  {server.url}/api/sessions"
              f"  {server.url}/api/verifiers")  # fmt: skip
        await _forever()


async def _indexer(args: argparse.Namespace) -> None:
    try:
        config = ServerConfig(
            heartbeat_period=args.heartbeat_period,
            missed_heartbeats=args.missed_heartbeats,
            host_keys=args.host_keys,
            redis_url=args.redis,
            indexers=tuple(args.publish),
            builds_dir=args.data,
            admit_on_register=not args.inspect,
            **({"indexer_id": args.indexer_id} if args.indexer_id else {}),
        )
    except ValueError as exc:
        raise SystemExit(f"gamecast indexer: {exc}") from None
    async with serve(args.host, args.port, config) as server:
        print(f"gamecast indexer {config.indexer_id} listening on {server.url}/", flush=True)
        print(f"  containers connect to {server.container_url}")
        print(f"  host keys: {args.host_keys} (gamecast keys issue --host NAME)")
        print(f"  game builds: {args.data} (studios: gamecast studio-keys issue NAME)")
        shared = f"shared through {args.redis}" if args.redis else "in memory (one indexer)"
        print(f"  registry: {shared}")
        admission = "after verifiers' registration check" if args.inspect else "on registration"
        print(f"  containers admitted {admission}; verifiers enlist at {server.url}/ws/verifier",
              flush=True)  # fmt: skip
        await _forever()


def _keys(args: argparse.Namespace) -> None:
    """Issue, revoke or list host keys; the store holds public keys only."""
    try:
        store = KeyStore.load(args.store)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if args.action == "issue":
            out = args.out or Path(f"{args.host}.gamecast-key")
            key, key_file = store.issue(args.host, now)
            write_private_key(out, key_file)  # first: a key nobody holds is not stored
            store.save()
            print(f"issued {key.key_id} for host {key.host}")
            print(f"  the operator's key file: {out} (keep it secret; mode 0600)")
            print(f"  run: gamecast container --host-key {out} --server ws://INDEXER/ws/container")
        elif args.action == "revoke":
            key = store.revoke(args.key_id, now)
            store.save()
            print(f"revoked {key.key_id} (host {key.host}); running indexers refuse it from now")
        else:
            for key in store.keys():  # noqa: SIM118  (a KeyStore, not a dict)
                state = f"revoked {key.revoked_at}" if key.revoked else "active"
                print(f"{key.key_id}  {key.host:<24} issued {key.issued_at}  {state}")
    except (KeyStoreError, KeyFileError) as exc:
        raise SystemExit(f"gamecast keys: {exc}") from None


async def _container(args: argparse.Namespace) -> None:
    width, height = args.max_size
    first, *others = args.server
    try:
        impairment = Impairment(args.impair_delay_ms, args.impair_fps, args.impair_ignore_input)
    except ImpairmentError as exc:
        raise SystemExit(f"gamecast container: {exc}") from None
    config = AgentConfig(
        first,
        args.id,
        encoder=args.encoder,
        codec=args.codec,
        playout_delay=args.playout_delay,
        steady_release=args.steady_release,
        max_width=width,
        max_height=height,
        max_fps=args.max_fps,
        region=args.region,
        price_per_minute=args.price,
        host_key=None if args.host_key is None else HostCredentials.load(args.host_key),
        other_servers=tuple(others),
        impairment=impairment,
        builds_dir=args.builds,
        deploy=tuple(args.deploy),
        unsafe_no_sandbox=args.unsafe_no_sandbox,
        warm_standby=args.warm_standby,
        probe=None if args.probe_host is None else (ANY_ADDRESS, args.probe_port, args.probe_host),
    )
    async with run_agent(config, args.capacity):
        print(f"container {args.id} registered with {first}")
        await _forever()


def _bench(args: argparse.Namespace) -> None:
    # Imported on demand: the latency benchmark pulls in Playwright.
    importlib.import_module(f"benchmarks.{args.benchmark}").main(args)


def _bench_passing_options(args: argparse.Namespace) -> None:
    """A benchmark that parses its own options; its JSON goes under bench-results/ too."""
    module = importlib.import_module(f"benchmarks.{args.benchmark}")
    options = list(args.options)
    if "--json" not in options and not {"-h", "--help"} & set(options):
        options += ["--json", f"bench-results/{args.benchmark}.json"]
    raise SystemExit(module.main(options))


def _add_build_options(container: argparse.ArgumentParser) -> None:
    container.add_argument(
        "--builds",
        type=Path,
        default=Path.home() / ".local/share/gamecast/deployed",
        help="where this host unpacks studios' builds (default: %(default)s)",
    )
    container.add_argument(
        "--deploy",
        metavar="NAME",
        action="append",
        default=[],
        help="host this build: fetched from the indexer at start (repeat for each)",
    )
    container.add_argument(
        "--no-warm-standby",
        dest="warm_standby",
        action="store_false",
        help="start a build's display, sandbox and game when a player presses Play, instead of"
        " keeping one run of each build started and waiting (a display and an idle game each)",
    )
    container.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="run builds unconfined where bubblewrap does not work (they are untrusted code: "
        "they could read this host's keys and other sessions' screens)",
    )


def _add_probe_options(container: argparse.ArgumentParser) -> None:
    container.add_argument(
        "--probe-host",
        metavar="NAME",
        help="the name or address players reach this host by: they time round trips to "
        "http://NAME:PORT/probe before a claim (default: no probes; players are not placed)",
    )
    container.add_argument("--probe-port", type=int, default=0, help="(default: any free port)")


def _add_container_extras(container: argparse.ArgumentParser) -> None:
    _add_build_options(container)
    _add_probe_options(container)
    impair = container.add_argument_group(
        "impairments", "faults on purpose, to show that verifiers catch them; never for players"
    )
    impair.add_argument(
        "--impair-delay-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="hold every encoded frame MS milliseconds before sending it",
    )
    impair.add_argument(
        "--impair-fps",
        type=int,
        default=0,
        metavar="N",
        help="serve at most N fps whatever a session asks (0: as asked)",
    )
    impair.add_argument(
        "--impair-ignore-input",
        action="store_true",
        help="drop every input event before the game sees it",
    )


def _add_indexer(commands: Any) -> None:
    indexer = commands.add_parser("indexer", help="run the signaling server and indexer only")
    indexer.add_argument("--host", default="127.0.0.1")
    indexer.add_argument("--port", type=int, default=8080)
    indexer.add_argument(
        "--host-keys",
        type=Path,
        default=DEFAULT_KEY_STORE,
        help="the host key store registrations are checked against (default: %(default)s)",
    )
    indexer.add_argument(
        "--redis",
        metavar="URL",
        help="share the registry with other indexers: redis://HOST:PORT or unix:///PATH",
    )
    indexer.add_argument("--indexer-id", help="this indexer's id on the network (default: random)")
    indexer.add_argument(
        "--publish",
        metavar="URL",
        action="append",
        default=[],
        help="an indexer players may use (http://HOST:PORT); repeat for each, this one included",
    )
    indexer.add_argument(
        "--inspect",
        action="store_true",
        help="offer a container to players only once verifiers passed its registration check"
        " (without: announced specs are taken as inspected)",
    )
    indexer.add_argument(
        "--data",
        type=Path,
        default=builds_cli.DEFAULT_DATA,
        help="where studios' uploaded builds are kept (default: %(default)s)",
    )
    indexer.add_argument("--heartbeat-period", type=float, default=2.0, metavar="SECONDS")
    indexer.add_argument("--missed-heartbeats", type=int, default=3, metavar="N")
    indexer.set_defaults(handler=lambda a: _run(_indexer(a)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gamecast", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True)

    def media(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--encoder",
            choices=ENCODER_CHOICES,
            default="auto",
            help="auto: NVENC where a probe proves it works, else x264 (default); nvenc or x264:"
            " gamecast's low-latency H.264; aiortc: aiortc's stock encoders, as a baseline",
        )
        sub.add_argument(
            "--codec", choices=("h264", "vp8"), default="h264", help="preferred video codec"
        )
        sub.add_argument(
            "--no-playout-delay",
            dest="playout_delay",
            action="store_false",
            help="do not ask browsers to render at once (RTP playout-delay min=max=0)",
        )
        sub.add_argument(
            "--no-steady-release",
            dest="steady_release",
            action="store_false",
            help="send each frame as soon as it is encoded: ~1-2 ms less latency, more jitter",
        )
        sub.add_argument(
            "--max-size",
            type=_max_size,
            default=f"{AgentConfig.max_width}x{AgentConfig.max_height}",
            metavar="WxH",
            help="largest picture the container offers players (default: %(default)s)",
        )
        sub.add_argument(
            "--capacity",
            type=_capacity,
            default=None,
            metavar="N",
            help="sessions served at once at every offered shape (default: measured at start)",
        )
        sub.add_argument(
            "--max-fps",
            type=_max_fps,
            default=AgentConfig.max_fps,
            metavar="N",
            help="highest frame rate the container offers players (default: %(default)s)",
        )

    up = commands.add_parser(
        "up", help="run indexer, signaling, a container and the web client in one process"
    )
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument(
        "--verifiers",
        type=int,
        default=1,
        metavar="N",
        help="verifiers to run in the process (0: admit the container unchecked)",
    )
    media(up)
    up.set_defaults(handler=lambda a: _run(_up(a)))

    _add_indexer(commands)

    keys = commands.add_parser("keys", help="issue, revoke and list the hosts' keys")
    keys.add_argument("--store", type=Path, default=DEFAULT_KEY_STORE, help="%(default)s")
    key_actions = keys.add_subparsers(dest="action", required=True)
    issue = key_actions.add_parser("issue", help="a new key for an operator's host")
    issue.add_argument("--host", required=True, help="the operator's name for the host")
    issue.add_argument(
        "--out", type=Path, help="the key file to write (default: HOST.gamecast-key)"
    )
    revoke = key_actions.add_parser("revoke", help="refuse a key's registrations from now on")
    revoke.add_argument("key_id")
    key_actions.add_parser("list", help="every key, active or revoked")
    keys.set_defaults(handler=_keys)
    builds_cli.add_commands(commands)

    container = commands.add_parser(
        "container", help="run a container agent that streams the reference game"
    )
    container.add_argument(
        "--server",
        required=True,
        action="append",
        help="ws://HOST:PORT/ws/container of an indexer; repeat for each of the network's"
        " indexers: the agent registers with the first and moves to another when it fails",
    )
    container.add_argument("--id", default=f"{socket.gethostname()}-1", help="this container's id")
    container.add_argument(
        "--host-key", type=Path, help="the key file `gamecast keys issue` wrote for this host"
    )
    container.add_argument("--region", default="", help="where the host is, e.g. eu-west")
    container.add_argument(
        "--price", type=float, default=0.0, help="what a player pays per minute (default: 0)"
    )
    media(container)
    _add_container_extras(container)
    container.set_defaults(handler=lambda a: _run(_container(a)))
    verifier_cli.add_commands(commands, serve=_run)

    _add_benchmarks(
        commands.add_parser("bench", help="run a benchmark and print a table plus JSON")
    )
    return parser


def _add_benchmarks(bench: argparse.ArgumentParser) -> None:
    bench_kinds = bench.add_subparsers(dest="benchmark", required=True)

    def benchmark(name: str, help: str) -> argparse.ArgumentParser:
        """A `gamecast bench NAME` with its JSON path; run by benchmarks/NAME.py's main."""
        sub = bench_kinds.add_parser(name, help=help)
        sub.add_argument(
            "--out", default=f"bench-results/{name}.json", help="where to write the JSON"
        )
        sub.set_defaults(handler=_bench)
        return sub

    latency = benchmark("latency", "glass-to-glass, input-to-photon, fps: aiortc bot and Chromium")
    latency.add_argument(
        "--seconds", type=float, default=20.0, help="measured time per configuration"
    )
    latency.add_argument("--no-browser", action="store_true", help="skip the Chromium client")
    render = benchmark("render", "per-frame CPU cost of the game, the marker and colour conversion")
    render.add_argument("--frames", type=int, default=300, help="frames timed per stage")
    encode = benchmark("encode", "per encoder backend and resolution: fps, latency, bytes, CPU")
    encode.add_argument("--frames", type=int, default=120, help="frames per backend and size")
    encode.add_argument(
        "--sizes",
        type=_sizes,
        default="720p,1080p,4k",
        help="comma-separated, of 720p, 1080p, 4k (default: %(default)s)",
    )
    coordinates = benchmark(
        "coordinates", "network-coordinate RTT estimates against a synthetic topology"
    )
    coordinates.add_argument("--nodes", type=int, default=1000, help="nodes in the topology")
    coordinates.add_argument("--rounds", type=int, default=500, help="samples per node")
    coordinates.add_argument("--seeds", type=int, default=5, help="topologies, seeds 1 to N")
    # These two define their options themselves (`gamecast bench indexer --help`).
    for name, help in (
        ("indexer", "selection decisions/s on 40,000 containers, against a plain scan"),
        ("indexer_shared", "claims/s of three indexer processes on one redis-server"),
        ("capture", "the example build captured under Xvfb: fps, latency p50/p95, baselines"),
        ("sandbox", "a build's sandbox: start cost against a plain start, capture fps in it"),
        ("builds", "a build's Play to first frame in Chromium, cold and warm; standby's cost"),
        ("verifier", "the bot's glass-to-glass against known container delays; bot CPU"),
    ):
        passed = bench_kinds.add_parser(name, help=help, add_help=False)
        passed.set_defaults(handler=_bench_passing_options)
    stop = benchmark("stop", "seconds `gamecast up` takes to exit on SIGINT/SIGTERM, per state")
    stop.add_argument("--repeat", type=int, default=1, help="runs per state and signal")
    network = benchmark(
        "network", "a session through a lossy, narrow link: fps, latency, bitrate trace"
    )
    network.add_argument("--loss", type=float, default=0.02, help="downstream packet loss, 0-1")
    network.add_argument("--rate-mbps", type=float, default=4.0, help="bottleneck rate")
    network.add_argument("--queue-ms", type=float, default=100.0, help="bottleneck queue")
    network.add_argument("--before", type=float, default=10.0, help="clean seconds first")
    network.add_argument("--impaired", type=float, default=20.0, help="impaired seconds")
    network.add_argument("--after", type=float, default=20.0, help="clean seconds after")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, options = parser.parse_known_args(argv)
    if args.handler is _bench_passing_options:
        args.options = options
    elif options:
        parser.error(f"unrecognized arguments: {' '.join(options)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.handler(args)
