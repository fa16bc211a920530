"""The signaling contract, version 1: every JSON message on the player and container WebSockets.

Each message is a JSON object `{"v": 1, "type": ..., <fields>}`. The records below are the
single definition: the server parses with them, and the web client imports the same names and
limits from /protocol.js, which is generated from this module.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal

from contracts.errors import ContractError

VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024  # an SDP with many candidates is ~10 kB
MAX_SDP_BYTES = 48 * 1024
MAX_TEXT = 128
MAX_LIST = 64
MAX_GPUS = 16
MAX_GPU_NAME = 96  # NVML_DEVICE_NAME_V2_BUFFER_SIZE and NVML_DEVICE_UUID_V2_BUFFER_SIZE
MAX_MIB = 1 << 24  # 16 TiB: above any one host's RAM or any GPU's memory, in MiB
MAX_SESSIONS = 64  # concurrent sessions one container may advertise per stream shape

MAX_PROBES = 8  # containers one player measures before a claim
MAX_PROBE_MS = 10_000.0  # coordinates refuse longer round trips as absurd (Serf's limit)
MIN_PROBE_MS = 0.05  # shorter is no network: loopback and timer resolution sit above it
MAX_URL = 256

MAX_PRICE = 1000.0  # per minute, in the network's currency unit
DEFAULT_RTT_BOUND_MS = 80
POLICIES = ("lowest-cost", "best-experience", "best-overall")

MAX_TIMINGS = 1200  # frame timings in one report or one live sample: 20 s at 60 fps
MAX_FRAME_TIME_MS = 1e12  # a container's monotonic clock, in ms: 31 years of uptime
MAX_ENCODE_MS = 60_000.0
MAX_SUMMARIES = 30  # player summaries in one live sample: a minute at one every 2 s
MAX_COUNT = 10**12  # a player's counters since its session started

Role = Literal["player", "container", "server", "verifier"]
CHECKS = (
    "registration",
    "spot",
    "bot",
    "live",
)  # the checks a verifier is assigned (contracts/verdict.py)


class ProtocolError(ContractError):
    """A message was refused; `code` is stable for programs, `reason` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    type: ClassVar[str]
    senders: ClassVar[tuple[Role, ...]]

    def to_json(self) -> str:
        body = asdict(self)
        for spec in fields(self):
            # An optional record left out is absent on the wire, as a peer that predates it sent it.
            if spec.default is None and body[spec.name] is None:
                del body[spec.name]
        return json.dumps({"v": VERSION, "type": self.type, **body}, separators=(",", ":"))


def _reading(low: int, high: int) -> dict[str, Any]:
    """Field rules of a nullable integer reading within [low, high]."""
    return {"low": low, "high": high, "null": True}


def _real_reading(high: float) -> dict[str, Any]:
    """Field rules of a nullable real-valued reading within [0, high]."""
    return {"low": 0.0, "high": high, "real": True, "null": True}


def _figure(low: float, high: float) -> dict[str, Any]:
    """Field rules of a player's figure within [low, high] that the page may lack: NaN there,
    null once JSON.stringify wrote it; both read as None."""
    return {"low": low, "high": high, "real": True, "null": True, "nan": True}


def _timings(high: float) -> dict[str, Any]:
    """Field rules of a series of frame timings, each within [0, high] ms."""
    return {"low": 0.0, "high": high, "real": True, "items": MAX_TIMINGS}


# Player -> server ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Play(Message):
    """Ask for a container that hosts `game`, streaming at the given size and rate."""

    type = "play"
    senders = ("player",)
    game: str = field(metadata={"max": 64})
    width: int = field(default=1280, metadata={"low": 320, "high": 3840, "even": True})
    height: int = field(default=720, metadata={"low": 180, "high": 2160, "even": True})
    fps: int = field(default=60, metadata={"low": 1, "high": 240})
    # How to rank the containers that fit (indexer/selection.py), the most the player pays per
    # minute (null: no limit) and the widest round trip they accept (it relaxes while they wait).
    policy: str = field(default="best-overall", metadata={"max": 16, "choices": POLICIES})
    budget_per_minute: float | None = field(default=None, metadata=_real_reading(MAX_PRICE))
    rtt_bound_ms: int = field(default=DEFAULT_RTT_BOUND_MS, metadata={"low": 1, "high": 5000})
    # The page can time round trips to containers: the indexer may ask it to (Probe) before
    # the claim, to place the player among the network's coordinates.
    probe: bool = field(default=False, metadata={"bool": True})
    # A verifier's bot session: the ticket of its assignment seats it on the container under
    # check, past the ranking (judge/coordinator.py). "": an ordinary player.
    ticket: str = field(default="", metadata={"max": 64})
    # Paint the frame marker into the picture (MARKER.md): the page's latency figures and
    # every verification read it; a player who wants the bare picture says false.
    marker: bool = field(default=True, metadata={"bool": True})


@dataclass(frozen=True, slots=True)
class ProbeSample:
    """The median of the page's probes to one container, in milliseconds."""

    container: str = field(metadata={"max": 64})
    rtt_ms: float = field(metadata={"low": MIN_PROBE_MS, "high": MAX_PROBE_MS, "real": True})


@dataclass(frozen=True, slots=True)
class Probed(Message):
    """The page's answer to Probe: one sample per container it reached (others left out)."""

    type = "probed"
    senders = ("player",)
    samples: list[ProbeSample] = field(metadata={"record": ProbeSample, "items": MAX_PROBES})


@dataclass(frozen=True, slots=True)
class Offer(Message):
    """The player's WebRTC offer, with its ICE candidates gathered (non-trickle)."""

    type = "offer"
    senders = ("player",)
    sdp: str = field(metadata={"max": MAX_SDP_BYTES})


@dataclass(frozen=True, slots=True)
class End(Message):
    """Either side ends the session; a player's own session is implied, a container names it."""

    type = "end"
    senders = ("player", "container", "server")
    session: str = field(default="", metadata={"max": MAX_TEXT})
    reason: str = field(default="ended by peer", metadata={"max": MAX_TEXT})


@dataclass(frozen=True, slots=True)
class PlayerStats:
    """One summary of the page's getStats (web-client/stats.js, its camelCase names in snake
    case), the player's side of a live sample (verifier/live_sample.py); None where the page
    had no figure. The counters run from the start of the session."""

    fps: float = field(metadata={"low": 0.0, "high": 1000.0, "real": True})
    width: int = field(metadata={"low": 0, "high": 7680})
    height: int = field(metadata={"low": 0, "high": 4320})
    bitrate_kbps: float | None = field(metadata=_figure(0.0, 10_000_000.0))
    rtt_ms: float | None = field(metadata=_figure(0.0, MAX_PROBE_MS))
    jitter_buffer_ms: float | None = field(metadata=_figure(0.0, 60_000.0))
    decode_ms: float | None = field(metadata=_figure(0.0, 60_000.0))
    frames_decoded: int = field(metadata={"low": 0, "high": MAX_COUNT})
    frames_dropped: int = field(metadata={"low": 0, "high": MAX_COUNT})
    freezes: int = field(metadata={"low": 0, "high": MAX_COUNT})
    # The marker's capture age (shared/MARKER.md), signed: negative where the clocks disagree.
    g2g_p50_ms: float | None = field(metadata=_figure(-(2.0**31), 2.0**31))
    codec: str = field(metadata={"max": 32})


@dataclass(frozen=True, slots=True)
class PlayerStatsReport(Message):
    """The page's latest summary, every ~2 s while its session plays: what a live sample of
    the session (a LIVE check) weighs beside the container's own figures."""

    type = "player_stats"
    senders = ("player",)
    stats: PlayerStats = field(metadata={"record": PlayerStats})


# Records nested in container messages ---------------------------------------------------------
#
# Readings a GPU or its driver does not offer are None ("not supported"), never an error: NVML
# answers NotSupported for encoder queries on GPUs without NVENC (H100, H200, A100) and under MIG.


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """A GPU as its driver names it; `index` is NVML's, `uuid` is stable across reboots."""

    index: int = field(metadata={"low": 0, "high": 255})
    name: str = field(metadata={"max": MAX_GPU_NAME})
    uuid: str = field(metadata={"max": MAX_GPU_NAME})
    memory_total_mib: int | None = field(metadata=_reading(0, MAX_MIB))


@dataclass(frozen=True, slots=True)
class GpuTelemetry(GpuSpec):
    """One GPU's readings at a heartbeat (NVML: utilization over its last sample period).

    A reading left out is None, like one the GPU does not offer, so readings can be added
    without breaking agents that do not know them yet.
    """

    memory_used_mib: int | None = field(default=None, metadata=_reading(0, MAX_MIB))
    gpu_util_percent: int | None = field(default=None, metadata=_reading(0, 100))
    memory_util_percent: int | None = field(default=None, metadata=_reading(0, 100))
    temperature_c: int | None = field(default=None, metadata=_reading(0, 200))
    power_w: float | None = field(default=None, metadata=_real_reading(10_000.0))
    power_limit_w: float | None = field(default=None, metadata=_real_reading(10_000.0))
    graphics_clock_mhz: int | None = field(default=None, metadata=_reading(0, 20_000))
    sm_clock_mhz: int | None = field(default=None, metadata=_reading(0, 20_000))
    memory_clock_mhz: int | None = field(default=None, metadata=_reading(0, 50_000))
    encoder_util_percent: int | None = field(default=None, metadata=_reading(0, 100))
    encoder_sessions: int | None = field(default=None, metadata=_reading(0, 4096))
    encoder_fps: int | None = field(default=None, metadata=_reading(0, 100_000))
    encoder_latency_us: int | None = field(default=None, metadata=_reading(0, 60_000_000))
    # nvmlDeviceGetEncoderCapacity: the share (%) of NVENC still free for another stream.
    encoder_capacity_h264: int | None = field(default=None, metadata=_reading(0, 100))
    encoder_capacity_hevc: int | None = field(default=None, metadata=_reading(0, 100))
    encoder_capacity_av1: int | None = field(default=None, metadata=_reading(0, 100))


@dataclass(frozen=True, slots=True)
class HostSpecs:
    """What a container's host is made of, announced at registration; `gpus` is empty
    without an NVIDIA driver (a CPU-only container)."""

    cpu_model: str = field(metadata={"max": MAX_TEXT})
    cpu_cores: int = field(metadata={"low": 1, "high": 4096})  # logical CPUs
    ram_mib: int = field(metadata={"low": 1, "high": MAX_MIB})
    gpus: list[GpuSpec] = field(metadata={"record": GpuSpec, "items": MAX_GPUS})


@dataclass(frozen=True, slots=True)
class StreamCapacity:
    """How many sessions of one stream shape a container serves at once (streamer/capacity.py)."""

    width: int = field(metadata={"low": 320, "high": 7680})
    height: int = field(metadata={"low": 180, "high": 4320})
    fps: int = field(metadata={"low": 1, "high": 240})
    sessions: int = field(metadata={"low": 1, "high": MAX_SESSIONS})


@dataclass(frozen=True, slots=True)
class Telemetry:
    """The host's load and every GPU's readings, sent with each heartbeat."""

    cpu_percent: float = field(metadata={"low": 0.0, "high": 100.0, "real": True})
    ram_used_mib: int = field(metadata={"low": 0, "high": MAX_MIB})
    gpus: list[GpuTelemetry] = field(metadata={"record": GpuTelemetry, "items": MAX_GPUS})


# Container -> server ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Register(Message):
    """A container offers itself: what it hosts, how large a stream it can send, and (since
    telemetry; optional for older agents) the host it runs on."""

    type = "register"
    senders = ("container",)
    container: str = field(metadata={"max": 64})
    games: list[str] = field(metadata={"max": 64, "items": MAX_LIST})
    encoders: list[str] = field(metadata={"max": 32, "items": 8})
    max_width: int = field(metadata={"low": 320, "high": 7680, "even": True})
    max_height: int = field(metadata={"low": 180, "high": 4320, "even": True})
    max_fps: int = field(metadata={"low": 1, "high": 240})
    host: HostSpecs | None = field(default=None, metadata={"record": HostSpecs, "null": True})
    # Why this encoder (streamer/backends.py), where frames are drawn, and how many sessions
    # fit; an agent that predates them serves one session at a time.
    encoder_reason: str = field(default="", metadata={"max": 2 * MAX_TEXT})
    frames_on: str = field(default="cpu", metadata={"max": 3, "choices": ("cpu", "gpu")})
    capacity: list[StreamCapacity] = field(
        default_factory=list, metadata={"record": StreamCapacity, "items": MAX_LIST}
    )
    # Where the operator says the host is, what a player pays per minute on it, and its
    # measured uplink (0: not measured); selection filters and ranks on them.
    region: str = field(default="", metadata={"max": 32})
    price_per_minute: float = field(
        default=0.0, metadata={"low": 0.0, "high": MAX_PRICE, "real": True}
    )
    uplink_mbps: float = field(default=0.0, metadata={"low": 0.0, "high": 400_000.0, "real": True})
    # Where players time round trips to this host (an HTTP endpoint answering at once); "":
    # nowhere, and players cannot place it among the network's coordinates.
    probe_url: str = field(default="", metadata={"max": MAX_URL, "url": True})
    # The operator's host key (contracts/signing.py) and its signature over this message (all of it
    # but `signature`) and the connection's challenge: a forged or replayed one is refused.
    key_id: str = field(default="", metadata={"max": 64})
    challenge: str = field(default="", metadata={"max": 128})  # the one this answers
    signature: str = field(default="", metadata={"max": 128})


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """The container is alive; since telemetry was added, also how loaded it is."""

    type = "heartbeat"
    senders = ("container",)
    telemetry: Telemetry | None = field(default=None, metadata={"record": Telemetry, "null": True})


@dataclass(frozen=True, slots=True)
class Answer(Message):
    type = "answer"
    senders = ("container",)
    session: str = field(metadata={"max": MAX_TEXT})
    sdp: str = field(metadata={"max": MAX_SDP_BYTES})


@dataclass(frozen=True, slots=True)
class Playing(Message):
    """The container's peer is connected and media flows."""

    type = "playing"
    senders = ("container",)
    session: str = field(metadata={"max": MAX_TEXT})


@dataclass(frozen=True, slots=True)
class SessionTimings(Message):
    """A live session's frames since the container's last report (every ~2 s): when each was
    handed to the sender, in ms on the container's monotonic clock, and how long each encode
    took. The indexer keeps the latest MAX_TIMINGS of each for live samples."""

    type = "session_timings"
    senders = ("container",)
    session: str = field(metadata={"max": MAX_TEXT})
    frame_times_ms: list[float] = field(metadata=_timings(MAX_FRAME_TIME_MS))
    encode_ms: list[float] = field(metadata=_timings(MAX_ENCODE_MS))


@dataclass(frozen=True, slots=True)
class Maintenance(Message):
    """The container is leaving: lock it under maintenance (indexer/lifecycle.py), so the
    indexer seats nobody new on it while it ends its sessions, each with an End and `reason`."""

    type = "maintenance"
    senders = ("container",)
    reason: str = field(default="the container is shutting down", metadata={"max": MAX_TEXT})


BUILD_EVENT_KINDS = (
    "crashed",  # the game ended on its own, not cleanly (an exit code or a signal)
    "limit_killed",  # a limit of its sandbox ended it (`limit` says which)
    "hash_refused",  # a deployed build's tree differed from the one its blob derives
    "planted",  # a folder among the builds that no blob of this host proves
)
SANDBOX_LIMITS = ("memory", "processes", "cpu_time")  # what `limit_killed` names


@dataclass(frozen=True, slots=True)
class BuildEvent(Message):
    """What happened to one of the container's builds (streamer/fault_reports.py): a game that
    crashed or hit a limit of its sandbox (`session`: the session it ended), or a build found
    altered or planted on the container's own disk (at start or before a session). The last
    two say the host's storage was touched: the indexer sends it to re-inspection.
    `detail` is for people (an exit and its last stderr line, what differed on disk)."""

    type = "build_event"
    senders = ("container",)
    kind: str = field(metadata={"max": 16, "choices": BUILD_EVENT_KINDS})
    build: str = field(default="", metadata={"max": 64})  # "": a planted folder has no name
    version: str = field(default="", metadata={"max": 32})
    sha256: str = field(default="", metadata={"max": 64})  # the build's blob, where known
    session: str = field(default="", metadata={"max": MAX_TEXT})
    limit: str = field(default="", metadata={"max": 16, "choices": ("", *SANDBOX_LIMITS)})
    detail: str = field(default="", metadata={"max": MAX_TEXT})

    def __post_init__(self) -> None:
        if (self.kind == "limit_killed") != bool(self.limit):
            raise ProtocolError(
                "bad_field", "build_event.limit names the limit of a limit_killed event, and only"
            )


# Verifier -> server ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enlist(Message):
    """A verifier offers itself for duty with its stake (judge/rotation.py weighs it)."""

    type = "enlist"
    senders = ("verifier",)
    verifier: str = field(metadata={"max": 64})
    stake: int = field(metadata={"low": 1, "high": 10**15})
    # Signed like a registration (contracts/signing.py) over the socket's Challenge, with a key the
    # network's operator issued the verifier; unsigned where the indexer checks no keys.
    key_id: str = field(default="", metadata={"max": 64})
    challenge: str = field(default="", metadata={"max": 128})
    signature: str = field(default="", metadata={"max": 128})


@dataclass(frozen=True, slots=True)
class FindingRecord:
    """One contracts/verdict.py Finding on the wire; numbers travel as their decimal text."""

    name: str = field(metadata={"max": 32})
    passed: bool = field(metadata={"bool": True})
    claimed: str = field(default="", metadata={"max": MAX_TEXT})
    measured: str = field(default="", metadata={"max": MAX_TEXT})
    detail: str = field(default="", metadata={"max": 512})


@dataclass(frozen=True, slots=True)
class Metric:
    name: str = field(metadata={"max": 32})
    value: float = field(metadata={"low": -1e12, "high": 1e12, "real": True})


@dataclass(frozen=True, slots=True)
class VerdictReport(Message):
    """A committee member's verdict on the check it was assigned."""

    type = "verdict"
    senders = ("verifier",)
    check: str = field(metadata={"max": 32})
    container: str = field(metadata={"max": 64})
    kind: str = field(metadata={"max": 16, "choices": CHECKS})
    findings: list[FindingRecord] = field(metadata={"record": FindingRecord, "items": MAX_LIST})
    metrics: list[Metric] = field(
        default_factory=list, metadata={"record": Metric, "items": MAX_LIST}
    )


# The registration check's round trip (verifier/registration.py): the verifier sends the
# challenge and the rows to reveal, the container answers; the indexer relays both ways,
# checking that the verifier sits on the container's open registration check. `inspection`
# is "<check id>.<verifier id>", so replies find their way back.


@dataclass(frozen=True, slots=True)
class InspectionChallenge(Message):
    """Work to do (contracts/challenge.py) and the time it must be committed within."""

    type = "inspection_challenge"
    senders = ("verifier", "server")
    inspection: str = field(metadata={"max": 2 * MAX_TEXT})
    seed: str = field(metadata={"max": 64})  # 32 bytes, hex
    size: int = field(metadata={"low": 256, "high": 8192})
    rounds: int = field(metadata={"low": 1, "high": 64})
    reveal: int = field(metadata={"low": 1, "high": 64})
    device: str = field(metadata={"max": MAX_TEXT})  # the claimed hardware it was sized for
    time_bound_ms: int = field(metadata={"low": 1, "high": 600_000})


@dataclass(frozen=True, slots=True)
class InspectionCommitment(Message):
    """The container's Merkle root over its result, with what its host measures now."""

    type = "inspection_commitment"
    senders = ("container", "server")
    inspection: str = field(metadata={"max": 2 * MAX_TEXT})
    root: str = field(metadata={"max": 64})  # hex
    measured: HostSpecs = field(metadata={"record": HostSpecs})
    nvenc: bool = field(metadata={"bool": True})
    nvenc_reason: str = field(default="", metadata={"max": 2 * MAX_TEXT})


@dataclass(frozen=True, slots=True)
class InspectionReveal(Message):
    """The rows to reveal, drawn by the verifier only after the root arrived."""

    type = "inspection_reveal"
    senders = ("verifier", "server")
    inspection: str = field(metadata={"max": 2 * MAX_TEXT})
    rows: list[int] = field(metadata={"low": 0, "high": 8191, "items": 64})


@dataclass(frozen=True, slots=True)
class RevealedRowRecord:
    index: int = field(metadata={"low": 0, "high": 8191})
    values: str = field(metadata={"max": 8192})  # hex of size/2 bytes
    proof: list[str] = field(metadata={"max": 64, "items": 13})  # sibling hashes, leaf first


@dataclass(frozen=True, slots=True)
class InspectionRows(Message):
    """Revealed rows with their Merkle proofs, as many as fit in one message (a row of 8192
    values is ~9 kB of JSON): a handful of messages per check, not one per row."""

    type = "inspection_rows"
    senders = ("container", "server")
    inspection: str = field(metadata={"max": 2 * MAX_TEXT})
    rows: list[RevealedRowRecord] = field(metadata={"record": RevealedRowRecord, "items": 64})


# Server -> player / container ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Matched(Message):
    type = "matched"
    senders = ("server",)
    session: str = field(metadata={"max": MAX_TEXT})
    container: str = field(metadata={"max": 64})


@dataclass(frozen=True, slots=True)
class Challenge(Message):
    """Sent first on a container's socket: the registration must be signed over it."""

    type = "challenge"
    senders = ("server",)
    challenge: str = field(metadata={"max": 64})


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    container: str = field(metadata={"max": 64})
    url: str = field(metadata={"max": MAX_URL, "url": True})


@dataclass(frozen=True, slots=True)
class Probe(Message):
    """Before the claim: time `count` round trips to each target and report each median
    (Probed). DESIGN.md step 3: a shortlist measured directly, not every container."""

    type = "probe"
    senders = ("server",)
    targets: list[ProbeTarget] = field(metadata={"record": ProbeTarget, "items": MAX_PROBES})
    count: int = field(default=3, metadata={"low": 1, "high": 16})


@dataclass(frozen=True, slots=True)
class Assignment(Message):
    """Server -> verifier: judge this check of this container before `deadline_ms` passes
    (milliseconds from now). A bot check names the stream to ask for and the ticket to ask
    with (Play.ticket); a live check names the session to sample (SessionSample)."""

    type = "assignment"
    senders = ("server",)
    check: str = field(metadata={"max": 32})
    container: str = field(metadata={"max": 64})
    kind: str = field(metadata={"max": 16, "choices": CHECKS})
    deadline_ms: int = field(metadata={"low": 1, "high": 86_400_000})
    ticket: str = field(default="", metadata={"max": 64})
    game: str = field(default="", metadata={"max": 64})
    width: int = field(default=1280, metadata={"low": 320, "high": 3840, "even": True})
    height: int = field(default=720, metadata={"low": 180, "high": 2160, "even": True})
    fps: int = field(default=60, metadata={"low": 1, "high": 240})
    session: str = field(default="", metadata={"max": MAX_TEXT})


@dataclass(frozen=True, slots=True)
class SessionSample(Message):
    """Server -> verifier, at GET /api/sessions/{session}/sample: what a live check judges
    (verifier/live_sample.py). The container's latest frame timings as it reported them
    (SessionTimings) and the player's latest summaries, oldest first; `window_s` is the time
    between the first and the last summary's arrival, `fps` the rate the session asked for."""

    type = "session_sample"
    senders = ("server",)
    session: str = field(metadata={"max": MAX_TEXT})
    container: str = field(metadata={"max": 64})
    fps: int = field(metadata={"low": 1, "high": 240})
    window_s: float = field(metadata={"low": 0.0, "high": 86_400.0, "real": True})
    frame_times_ms: list[float] = field(metadata=_timings(MAX_FRAME_TIME_MS))
    encode_ms: list[float] = field(metadata=_timings(MAX_ENCODE_MS))
    player: list[PlayerStats] = field(metadata={"record": PlayerStats, "items": MAX_SUMMARIES})


@dataclass(frozen=True, slots=True)
class Enlisted(Message):
    """Server -> verifier: on the roster; drawn for duty from the next epoch on."""

    type = "enlisted"
    senders = ("server",)
    verifier: str = field(metadata={"max": 64})
    epoch_seconds: float = field(metadata={"low": 0.001, "high": 1e7, "real": True})


@dataclass(frozen=True, slots=True)
class Queued(Message):
    """Nothing fits the player's request now: why (the filter that emptied the set), where
    they stand, and the round trip they accept by now (it widens while they wait)."""

    type = "queued"
    senders = ("server",)
    position: int = field(metadata={"low": 1, "high": 1_000_000})
    filter: str = field(metadata={"max": 16})
    reason: str = field(metadata={"max": 512})
    rtt_bound_ms: int | None = field(default=None, metadata=_reading(1, 1_000_000))


@dataclass(frozen=True, slots=True)
class Registered(Message):
    type = "registered"
    senders = ("server",)
    container: str = field(metadata={"max": 64})
    heartbeat_interval_ms: int = field(metadata={"low": 100, "high": 3_600_000})


@dataclass(frozen=True, slots=True)
class SessionOffer(Message):
    """The player's offer relayed to the container, with the stream it asked for."""

    type = "session_offer"
    senders = ("server",)
    session: str = field(metadata={"max": MAX_TEXT})
    sdp: str = field(metadata={"max": MAX_SDP_BYTES})
    width: int = field(metadata={"low": 320, "high": 3840, "even": True})
    height: int = field(metadata={"low": 180, "high": 2160, "even": True})
    fps: int = field(metadata={"low": 1, "high": 240})
    game: str = field(default="reference", metadata={"max": 64})  # a deployed build's name
    marker: bool = field(default=True, metadata={"bool": True})  # as the player's Play asked


@dataclass(frozen=True, slots=True)
class SessionAnswer(Message):
    type = "session_answer"
    senders = ("server",)
    session: str = field(metadata={"max": MAX_TEXT})
    sdp: str = field(metadata={"max": MAX_SDP_BYTES})


@dataclass(frozen=True, slots=True)
class SessionState(Message):
    type = "session_state"
    senders = ("server",)
    session: str = field(metadata={"max": MAX_TEXT})
    state: str = field(metadata={"max": 16})


@dataclass(frozen=True, slots=True)
class Ended(Message):
    type = "ended"
    senders = ("server",)
    session: str = field(metadata={"max": MAX_TEXT})
    reason: str = field(metadata={"max": MAX_TEXT})


@dataclass(frozen=True, slots=True)
class Error(Message):
    type = "error"
    senders = ("server",)
    code: str = field(metadata={"max": 32})
    reason: str = field(metadata={"max": 512})
    ref: str = field(
        default="", metadata={"max": MAX_TEXT}
    )  # the type of the message that caused it, when known


MESSAGES: dict[str, type[Message]] = {
    cls.type: cls
    for cls in (
        Play,
        Probed,
        Offer,
        End,
        PlayerStatsReport,
        Register,
        Heartbeat,
        Answer,
        Playing,
        SessionTimings,
        Maintenance,
        BuildEvent,
        Enlist,
        VerdictReport,
        InspectionChallenge,
        InspectionCommitment,
        InspectionReveal,
        InspectionRows,
        Matched,
        Assignment,
        SessionSample,
        Enlisted,
        Challenge,
        Probe,
        Queued,
        Registered,
        SessionOffer,
        SessionAnswer,
        SessionState,
        Ended,
        Error,
    )
}


def parse_message(raw: str | bytes, role: Role) -> Message:
    """Validate one WebSocket message sent by a `role` peer (size, JSON, version, fields)."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting: Recursion
        raise ProtocolError("malformed", f"message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("malformed", "message must be a JSON object")
    version = data.get("v")
    if isinstance(version, bool) or version != VERSION:
        raise ProtocolError("unsupported_version", f"protocol version {version!r} is not {VERSION}")
    kind = data.get("type")
    cls = MESSAGES.get(kind) if isinstance(kind, str) else None
    if cls is None or role not in cls.senders:
        allowed = sorted(t for t, c in MESSAGES.items() if role in c.senders)
        raise ProtocolError(
            "unknown_type", f"a {role} cannot send {kind!r}; expected one of {allowed}"
        )
    return _build(cls, data)


def _build(cls: type[Message], data: dict[str, Any]) -> Message:
    return cls(**_values(cls, data, cls.type, {"v", "type"}))


def _values(cls: type[Any], data: dict[str, Any], where: str, envelope: set[str]) -> dict[str, Any]:
    """The checked constructor arguments of the dataclass `cls` from the JSON object `data`."""
    specs = {f.name: f for f in fields(cls)}
    unknown = set(data) - envelope - set(specs)
    if unknown:
        raise ProtocolError("bad_field", f"{where} has unknown fields {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name not in data:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise ProtocolError("bad_field", f"{where} needs field {name!r}")
            continue
        values[name] = _check(f"{where}.{name}", data[name], spec.metadata)
    return values


def _items_noun(rules: Any) -> str:
    """What a list's items are, for its error message."""
    if "record" in rules:
        return "objects"
    if rules.get("real"):
        return "numbers"
    return "integers" if "low" in rules else "strings"


def _check(where: str, value: Any, rules: Any) -> Any:
    if rules.get("null") and (
        value is None or (rules.get("nan") and isinstance(value, float) and math.isnan(value))
    ):
        return None
    if "items" in rules:
        noun = _items_noun(rules)
        if not isinstance(value, list) or len(value) > rules["items"]:
            raise ProtocolError(
                "bad_field", f"{where} must be a list of at most {rules['items']} {noun}"
            )
        item_rules = {k: v for k, v in rules.items() if k != "items"}
        if "record" in rules:  # say which one: the values of strings name themselves
            return [_check(f"{where}[{i}]", item, item_rules) for i, item in enumerate(value)]
        return [_check(where, item, item_rules) for item in value]
    if "record" in rules:
        if not isinstance(value, dict):
            raise ProtocolError("bad_field", f"{where} must be an object")
        return rules["record"](**_values(rules["record"], value, where, set()))
    if rules.get("bool"):
        if not isinstance(value, bool):
            raise ProtocolError("bad_field", f"{where} must be true or false")
        return value
    if rules.get("real"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProtocolError("bad_field", f"{where} must be a number")
        value = float(value)
    elif "low" in rules and (isinstance(value, bool) or not isinstance(value, int)):
        raise ProtocolError("bad_field", f"{where} must be an integer")
    if "low" in rules:
        # NaN fails both comparisons, so it is refused here too (json.loads accepts NaN).
        if not rules["low"] <= value <= rules["high"]:
            raise ProtocolError(
                "bad_field", f"{where}={value} is outside [{rules['low']}, {rules['high']}]"
            )
        if rules.get("even") and value % 2:
            # 4:2:0 video halves each dimension for chroma: x264 and libvpx refuse odd sizes.
            raise ProtocolError("bad_field", f"{where}={value} must be even")
        return value
    if not isinstance(value, str):
        raise ProtocolError("bad_field", f"{where} must be a string")
    if len(value) > rules["max"]:
        raise ProtocolError("bad_field", f"{where} is longer than {rules['max']} characters")
    if rules.get("url") and value and not value.startswith(("http://", "https://")):
        raise ProtocolError("bad_field", f"{where} must be an http:// or https:// URL")
    if "choices" in rules and value not in rules["choices"]:
        raise ProtocolError(
            "bad_field", f"{where}={value!r} is not one of {list(rules['choices'])}"
        )
    return value
