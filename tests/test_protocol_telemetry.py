"""Host specs and telemetry in Register and Heartbeat: round trips, optional records, and the
exact error for each out-of-range, mistyped or oversized value."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

import pytest

from contracts import protocol as p
from contracts.protocol import ProtocolError, parse_message
from tests.samples import L4_TELEMETRY
from tests.test_protocol import register, wire

L4 = L4_TELEMETRY
H100 = replace(
    L4,
    index=1,
    name="NVIDIA H100 80GB HBM3",
    **{name: None for name in asdict(L4) if name.startswith("encoder_")},
)
HOST = p.HostSpecs(
    "AMD EPYC 9654", 192, 1_548_000, [p.GpuSpec(0, "NVIDIA L4", "GPU-3f1c6a2e", 23_034)]
)
CPU_ONLY = p.HostSpecs("AMD EPYC", 2, 24_105, [])


def gpu(**changes: Any) -> dict[str, Any]:
    return {**asdict(L4), **changes}


def heartbeat(**changes: Any) -> str:
    return wire(
        "heartbeat",
        telemetry={"cpu_percent": 12.5, "ram_used_mib": 4096, "gpus": [gpu()], **changes},
    )


def spec(**changes: Any) -> dict[str, Any]:
    return {**asdict(HOST.gpus[0]), **changes}


def host(**changes: Any) -> dict[str, Any]:
    return {"cpu_model": "AMD EPYC", "cpu_cores": 2, "ram_mib": 24_105, "gpus": [], **changes}


def without(record: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != name}


@pytest.mark.parametrize(
    "message",
    [
        p.Register("c1", ["tetris"], ["x264"], 1920, 1080, 60, HOST),
        p.Register("c1", ["tetris"], ["x264"], 1920, 1080, 60, CPU_ONLY),
        p.Heartbeat(p.Telemetry(12.5, 4096, [L4, H100])),
        p.Heartbeat(p.Telemetry(0.0, 0, [])),
    ],
    ids=["register-gpu", "register-cpu-only", "heartbeat-gpus", "heartbeat-cpu-only"],
)
def test_round_trip(message: p.Message) -> None:
    assert parse_message(message.to_json(), "container") == message


def test_golden_json() -> None:
    assert p.Heartbeat(p.Telemetry(12.5, 4096, [])).to_json() == (
        '{"v":1,"type":"heartbeat","telemetry":{"cpu_percent":12.5,"ram_used_mib":4096,"gpus":[]}}'
    )
    assert (
        p.Register("c1", [], [], 320, 180, 1, CPU_ONLY)
        .to_json()
        .endswith(
            '"max_fps":1,"host":{"cpu_model":"AMD EPYC","cpu_cores":2,"ram_mib":24105,"gpus":[]},'
            '"encoder_reason":"","frames_on":"cpu","capacity":[],"region":"",'
            '"price_per_minute":0.0,"uplink_mbps":0.0,"probe_url":"","key_id":"","challenge":"","signature":""}'
        )
    )


def test_a_peer_that_predates_telemetry_still_speaks_the_protocol() -> None:
    """Left out, the records are absent on the wire: old and new peers send the same bytes."""
    assert p.Heartbeat().to_json() == '{"v":1,"type":"heartbeat"}'
    assert "host" not in p.Register("c1", [], [], 320, 180, 1).to_json()
    assert parse_message(wire("heartbeat"), "container") == p.Heartbeat(None)
    assert parse_message(wire("heartbeat", telemetry=None), "container") == p.Heartbeat(None)
    assert parse_message(register(), "container") == p.Register(
        "c1", ["tetris"], ["h264"], 1920, 1080, 60, None
    )


def test_whole_numbers_are_accepted_as_real_readings() -> None:
    parsed = parse_message(heartbeat(cpu_percent=100, gpus=[gpu(power_w=0)]), "container")
    assert isinstance(parsed, p.Heartbeat) and parsed.telemetry is not None
    assert parsed.telemetry.cpu_percent == 100.0
    assert isinstance(parsed.telemetry.cpu_percent, float)
    assert isinstance(parsed.telemetry.gpus[0].power_w, float)


def test_limits_are_inclusive_and_readings_may_be_null() -> None:
    highest = gpu(
        index=255,
        name="n" * 96,
        uuid="u" * 96,
        memory_total_mib=p.MAX_MIB,
        temperature_c=200,
        power_w=10_000,
        encoder_latency_us=60_000_000,
    )
    nulls = {name: None for name in gpu() if name not in ("index", "name", "uuid")}
    raw = heartbeat(cpu_percent=0, ram_used_mib=p.MAX_MIB, gpus=[highest] * 16)
    highest_gpu = p.GpuTelemetry(**highest)
    assert parsed(raw) == p.Heartbeat(p.Telemetry(0.0, p.MAX_MIB, [highest_gpu] * 16))
    null_gpu = p.GpuTelemetry(**gpu(**nulls))
    assert parsed(heartbeat(gpus=[gpu(**nulls)])) == p.Heartbeat(
        p.Telemetry(12.5, 4096, [null_gpu])
    )
    top = host(cpu_model="c" * 128, cpu_cores=4096, ram_mib=p.MAX_MIB, gpus=[spec()] * 16)
    top_host = p.HostSpecs("c" * 128, 4096, p.MAX_MIB, [p.GpuSpec(**spec())] * 16)
    assert parsed(register(host=top)) == p.Register(
        "c1", ["tetris"], ["h264"], 1920, 1080, 60, top_host
    )


def parsed(raw: str) -> p.Message:
    """`raw` parsed as a container's message, checked to serialise back to the same message."""
    message = parse_message(raw, "container")
    assert parse_message(message.to_json(), "container") == message
    return message


TELEMETRY = "heartbeat.telemetry"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (wire("heartbeat", telemetry=[]), f"{TELEMETRY} must be an object"),
        (wire("heartbeat", telemetry="hot"), f"{TELEMETRY} must be an object"),
        (
            wire("heartbeat", telemetry={"cpu_percent": 1.0}),
            f"{TELEMETRY} needs field 'ram_used_mib'",
        ),
        (heartbeat(load=3), f"{TELEMETRY} has unknown fields ['load']"),
        (heartbeat(cpu_percent=100.5), f"{TELEMETRY}.cpu_percent=100.5 is outside [0.0, 100.0]"),
        (heartbeat(cpu_percent=-0.1), f"{TELEMETRY}.cpu_percent=-0.1 is outside [0.0, 100.0]"),
        (heartbeat(cpu_percent="12"), f"{TELEMETRY}.cpu_percent must be a number"),
        (heartbeat(cpu_percent=True), f"{TELEMETRY}.cpu_percent must be a number"),
        (heartbeat(cpu_percent=None), f"{TELEMETRY}.cpu_percent must be a number"),
        (heartbeat().replace("12.5", "NaN"), f"{TELEMETRY}.cpu_percent=nan is outside"),
        (heartbeat().replace("12.5", "Infinity"), f"{TELEMETRY}.cpu_percent=inf is outside"),
        (heartbeat(ram_used_mib=-1), f"{TELEMETRY}.ram_used_mib=-1 is outside [0, 16777216]"),
        (heartbeat(ram_used_mib=1.5), f"{TELEMETRY}.ram_used_mib must be an integer"),
        (
            heartbeat(ram_used_mib=10**30),
            f"{TELEMETRY}.ram_used_mib=1000000000000000000000000000000 is outside",
        ),
        (heartbeat(gpus=[gpu()] * 17), f"{TELEMETRY}.gpus must be a list of at most 16 objects"),
        (heartbeat(gpus={"0": gpu()}), f"{TELEMETRY}.gpus must be a list of at most 16 objects"),
        (heartbeat(gpus=["NVIDIA L4"]), f"{TELEMETRY}.gpus[0] must be an object"),
        (
            heartbeat(gpus=[gpu(temperature_c=1000)]),
            f"{TELEMETRY}.gpus[0].temperature_c=1000 is outside [0, 200]",
        ),
        (
            heartbeat(gpus=[gpu(), gpu(index=1, power_w=-3)]),
            f"{TELEMETRY}.gpus[1].power_w=-3.0 is outside [0.0, 10000.0]",
        ),
        (
            heartbeat(gpus=[gpu(gpu_util_percent=101)]),
            "gpus[0].gpu_util_percent=101 is outside [0, 100]",
        ),
        (
            heartbeat(gpus=[gpu(encoder_capacity_av1=-1)]),
            "gpus[0].encoder_capacity_av1=-1 is outside",
        ),
        (heartbeat(gpus=[gpu(encoder_fps="fast")]), "gpus[0].encoder_fps must be an integer"),
        (
            heartbeat(gpus=[gpu(encoder_sessions=True)]),
            "gpus[0].encoder_sessions must be an integer",
        ),
        (heartbeat(gpus=[gpu(index=None)]), "gpus[0].index must be an integer"),
        (heartbeat(gpus=[gpu(name=None)]), "gpus[0].name must be a string"),
        (heartbeat(gpus=[gpu(name="n" * 97)]), "gpus[0].name is longer than 96 characters"),
        (heartbeat(gpus=[gpu(evil=1)]), f"{TELEMETRY}.gpus[0] has unknown fields ['evil']"),
        (heartbeat(gpus=[without(gpu(), "uuid")]), f"{TELEMETRY}.gpus[0] needs field 'uuid'"),
        (register(host="AMD EPYC"), "register.host must be an object"),
        (register(host=host(cpu_cores=0)), "register.host.cpu_cores=0 is outside [1, 4096]"),
        (register(host=host(ram_mib=0)), "register.host.ram_mib=0 is outside [1, 16777216]"),
        (register(host=host(cpu_model=None)), "register.host.cpu_model must be a string"),
        (register(host=host(cpu_model="x" * 129)), "register.host.cpu_model is longer than 128"),
        (
            register(host=host(gpus=[spec()] * 17)),
            "register.host.gpus must be a list of at most 16",
        ),
        (
            register(host=host(gpus=[spec(memory_used_mib=1)])),
            "register.host.gpus[0] has unknown fields ['memory_used_mib']",
        ),
        (
            register(host=host(gpus=[spec(memory_total_mib=-1)])),
            "gpus[0].memory_total_mib=-1 is outside",
        ),
        (register(host=without(host(), "gpus")), "register.host needs field 'gpus'"),
    ],
)
def test_refused(raw: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message(raw, "container")
    assert caught.value.code == "bad_field"
    assert fragment in caught.value.reason


def test_telemetry_beyond_the_message_limit_is_too_large() -> None:
    raw = heartbeat(gpus=[gpu(name="n" * 5000)] * 16)
    assert len(raw) > p.MAX_MESSAGE_BYTES
    with pytest.raises(ProtocolError) as caught:
        parse_message(raw, "container")
    assert caught.value.code == "too_large"


def test_sixteen_full_gpus_fit_in_one_message() -> None:
    """The list bound and the size bound agree: the largest valid heartbeat is never too large."""
    longest = gpu(name="n" * 96, uuid="u" * 96, encoder_latency_us=60_000_000)
    raw = heartbeat(gpus=[longest] * 16)
    assert len(raw) < p.MAX_MESSAGE_BYTES
    assert len(json.loads(raw)["telemetry"]["gpus"]) == 16
    sixteen = [p.GpuTelemetry(**longest)] * 16
    assert parsed(raw) == p.Heartbeat(p.Telemetry(12.5, 4096, sixteen))
